"""`glance eval`'s default prompts: 48 written for glance, and on the shipped shapes model its own captions.

The 48 cover what few-step sampling tends to lose: people, animals, objects, scenes, text in the
image, counts, spatial relations and styles, six of each. On the shapes model (glance/smallmodel.py)
the default is every caption held out of its pretraining and every open caption (no place word: the
shape may be anywhere, which is where few steps have something to lose).
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_PROMPTS = (
    # people
    "a portrait of an elderly fisherman with a grey beard, soft window light",
    "a young woman reading a book on a park bench in autumn",
    "a chef tossing vegetables in a pan in a busy restaurant kitchen",
    "two children flying a red kite on a windy beach",
    "a street musician playing the violin under a bridge at night",
    "a close-up of a smiling astronaut inside a space station",
    # animals
    "a red fox sitting in fresh snow, morning light",
    "a tabby cat asleep on a stack of old books",
    "a humpback whale breaching next to a small sailing boat",
    "a hummingbird hovering beside a purple flower",
    "a golden retriever puppy carrying a stick through tall grass",
    "an owl perched on a mossy branch in a dark forest",
    # objects
    "a glass teapot with blooming tea on a wooden table",
    "a vintage typewriter with a sheet of paper in it",
    "a pair of worn leather boots by a fireplace",
    "a bowl of ramen with a soft-boiled egg, top view",
    "a bicycle leaning against a yellow wall",
    "a transparent crystal chess piece on a black background",
    # scenes
    "a lighthouse on a rocky cliff at sunset",
    "a narrow street in an old European town after rain",
    "a misty mountain lake with a wooden pier at dawn",
    "a futuristic city skyline at night with flying cars",
    "a cozy cabin interior with a fireplace and snow outside the window",
    "a desert road stretching to the horizon under a starry sky",
    # text in the image
    'a neon sign that reads "OPEN LATE" on a brick wall',
    'a chalkboard menu with the words "Soup of the Day"',
    'a coffee cup with the word "glance" printed on it',
    'a vintage travel poster with the title "VISIT MARS"',
    'a street sign that says "Main St" against a blue sky',
    'a birthday cake with "HAPPY 30" written in icing',
    # counts
    "three red apples on a white plate",
    "five colourful balloons floating in a blue sky",
    "two cats and one dog sitting on a sofa",
    "four candles on a dark wooden table",
    "a single sunflower in a tall glass vase",
    "seven ducks swimming in a row across a pond",
    # spatial relations
    "a blue cube on top of a red sphere",
    "a cat under a table, a vase of flowers on the table",
    "a small house to the left of a large oak tree",
    "a green bottle behind a clear wine glass",
    "a book lying between a lamp and a mug on a desk",
    "a ladder leaning against a wall with a bucket to its right",
    # styles
    "a watercolor painting of a harbour with fishing boats",
    "a pencil sketch of an old man's hands",
    "a pixel art castle on a hill",
    "an oil painting of a stormy sea in the style of the old masters",
    "a low-poly 3D render of a fox",
    "a black and white photograph of a train station in the 1950s",
)


def default_prompts(model_folder: Path | str | None) -> list[str]:
    """The shapes model's held-out and open captions when `model_folder` is the shipped model, else the 48."""
    if is_shapes_model(model_folder):
        from glance import shapes

        return [c.text for c in shapes.all_captions() if shapes.is_held_out(c) or c.place is None]
    return list(DEFAULT_PROMPTS)


def is_shapes_model(model_folder: Path | str | None) -> bool:
    from glance.smallmodel import MODEL_DIR

    if model_folder is None or not Path(model_folder).is_dir():
        return False
    return Path(model_folder).resolve() == MODEL_DIR.resolve()
