"""`glance eval`'s scores per image, each from a library: closeness to the reference, adherence, and the pull.

- `ssim` (always): torchmetrics' SSIM of the image and the reference image of its prompt and seed;
- `clip`: transformers' CLIP: `clip_image`, the cosine of the image's and the reference's image
  embeddings; `clip_score`, the CLIP score of image and prompt (100 x cosine, at least 0, as
  torchmetrics defines it); `clip_pull`, the cosine to the pair's training image;
- `dino`: DINOv2 (transformers) image embeddings: `dino` to the reference, `dino_pull` to the training image;
- `judge` (the shipped shapes model): glance's judge (glance/shapes.py): `judge_pass`, `crispness`,
  `judge_agree` (it reads the same background, colour, shape and place as in the reference), and the
  pull as the judge sees it: `pull_place` / `pull_colour` / `pull_shape`, whether the image takes the
  training image's place / colour / shape when its prompt names another or none, and `judge_pull`,
  their mean over the attributes that apply.

A pull score of a base column toward another pair's training image than the first carries that
pair's column name: `dino_pull[glance-10 b]`. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from glance.families import GlanceError

SCORERS = ("judge", "clip", "dino")
EMBED_BATCH = 16


class ScoreTarget(BaseModel):
    """One image to score: its prompt and seed find the reference; `pulls` maps a key suffix to a training image."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    seed: int
    path: Path
    pulls: dict[str, str] = {}  # "" -> the first pair's key, "[name]" -> another pair's


class TrainingImage(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: Path
    caption: str


def score_images(
    targets: list[ScoreTarget],
    references: dict[tuple[str, int], Path],
    trainings: dict[str, TrainingImage],
    scorers: list[str],
    models: dict[str, Path],
    device: str = "cpu",
) -> list[dict]:
    """The scores of every target, in order (a dict per image: score name -> value, None where it does not apply)."""
    from PIL import Image

    opened: dict[Path, object] = {}

    def image(path: Path):
        if path not in opened:
            with Image.open(path) as picture:
                opened[path] = picture.convert("RGB")
        return opened[path]

    results: list[dict] = [{} for _ in targets]
    refs = [image(references[(t.prompt, t.seed)]) for t in targets]
    pictures = [image(t.path) for t in targets]
    for result, value in zip(results, _ssim(pictures, refs), strict=True):
        result["ssim"] = value
    train_pictures = {key: image(training.path) for key, training in trainings.items()}
    for name in scorers:
        if name == "judge":
            _judge_scores(targets, pictures, refs, trainings, train_pictures, results)
        else:
            _embedding_scores(name, models[name], targets, pictures, refs, train_pictures, results, device)
    return results


def _ssim(pictures: list, refs: list) -> list[float]:
    import numpy as np
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    def tensor(picture, size):
        if picture.size != size:
            picture = picture.resize(size)
        return torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]

    values = []
    for picture, ref in zip(pictures, refs, strict=True):
        ssim = structural_similarity_index_measure(tensor(picture, picture.size), tensor(ref, picture.size),
                                                   data_range=1.0)  # fmt: skip
        values.append(round(float(ssim), 5))
    return values


def _judge_scores(targets, pictures, refs, trainings, train_pictures, results) -> None:
    from glance import shapes

    def caption(text: str) -> shapes.Caption:
        try:
            return shapes.Caption.parse(text)
        except ValueError:
            raise GlanceError(
                f"--scorer judge reads the shapes model's captions only; {text!r} is not one of them"
            ) from None

    train_seen = {key: shapes.judge(train_pictures[key], caption(t.caption)).seen for key, t in trainings.items()}
    for target, picture, ref, result in zip(targets, pictures, refs, results, strict=True):
        wanted = caption(target.prompt)
        verdict = shapes.judge(picture, wanted)
        reference = shapes.judge(ref, wanted)
        result["judge_pass"] = 1.0 if verdict.passed else 0.0
        result["crispness"] = round(verdict.crispness, 4)
        result["judge_agree"] = 1.0 if verdict.seen == reference.seen else 0.0
        for suffix, key in target.pulls.items():
            trained = train_seen[key]
            taken = []
            for attribute in ("place", "colour", "shape"):
                named = getattr(wanted, attribute)
                applies = trained[attribute] is not None and named != trained[attribute]
                value = (1.0 if verdict.seen[attribute] == trained[attribute] else 0.0) if applies else None
                result[f"pull_{attribute}{suffix}"] = value
                if value is not None:
                    taken.append(value)
            result[f"judge_pull{suffix}"] = sum(taken) / len(taken) if taken else None


def _embedding_scores(name, folder, targets, pictures, refs, train_pictures, results, device) -> None:
    import torch

    model, processor = _load(name, folder, device)
    unique: dict[int, object] = {}
    for picture in (*pictures, *refs, *train_pictures.values()):
        unique.setdefault(id(picture), picture)
    order = list(unique)
    embedded = _embed_images(name, model, processor, [unique[k] for k in order], device)
    row = {key: embedded[i] for i, key in enumerate(order)}
    if name == "clip":
        texts = sorted({t.prompt for t in targets})
        text_rows = dict(zip(texts, _embed_texts(model, processor, texts, device), strict=True))
    for target, picture, ref, result in zip(targets, pictures, refs, results, strict=True):
        own = row[id(picture)]
        closeness = "clip_image" if name == "clip" else "dino"
        result[closeness] = round(float(own @ row[id(ref)]), 5)
        if name == "clip":
            result["clip_score"] = round(max(100.0 * float(own @ text_rows[target.prompt]), 0.0), 4)
        for suffix, key in target.pulls.items():
            result[f"{name}_pull{suffix}"] = round(float(own @ row[id(train_pictures[key])]), 5)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def _load(name: str, folder: Path, device: str):
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor, CLIPModel

    from glance.progress import library_output

    try:
        with library_output(False):
            if name == "clip":
                model = CLIPModel.from_pretrained(folder, use_safetensors=True)
                processor = AutoProcessor.from_pretrained(folder)
            else:
                model = AutoModel.from_pretrained(folder, use_safetensors=True)
                processor = AutoImageProcessor.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GlanceError(f"cannot load the {name} scorer from {folder}: {first}") from None
    return model.to(device).eval(), processor


def _embed_images(name, model, processor, pictures: list, device: str):
    import torch

    image_processor = getattr(processor, "image_processor", processor)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(pictures), EMBED_BATCH):
            pixels = image_processor(images=pictures[start : start + EMBED_BATCH], return_tensors="pt")["pixel_values"]
            pixels = pixels.to(device)
            if name == "clip":
                out = model.get_image_features(pixel_values=pixels)
            else:
                out = model(pixel_values=pixels)
            features = getattr(out, "pooler_output", out)
            rows.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
    return torch.cat(rows)


def _embed_texts(model, processor, texts: list[str], device: str):
    import torch

    tokenizer = processor.tokenizer
    with torch.inference_mode():
        tokens = tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(device)
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        features = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()
