"""glance.tiny: complete offline pipelines with their family's real scheduler, built once and atomically."""

import json
from dataclasses import asdict

import pytest

from glance.families import FAMILIES, GlanceError, resolve_family
from glance.tiny import STAMP_NAME, build_tiny_model, write_sample_pair

COMPONENTS = {
    "flux": {"scheduler", "transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"},
    "sd3": {
        "scheduler",
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "tokenizer",
        "tokenizer_2",
        "tokenizer_3",
    },
    "qwen_image": {"scheduler", "transformer", "vae", "text_encoder", "tokenizer"},
    "chroma": {"scheduler", "transformer", "vae", "text_encoder", "tokenizer"},
    "z_image": {"scheduler", "transformer", "vae", "text_encoder", "tokenizer"},
    "flux2": {"scheduler", "transformer", "vae", "text_encoder", "tokenizer"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_is_a_complete_pipeline_with_the_real_scheduler(tiny, family):
    model = tiny(family).model
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == FAMILIES[family].pipeline_class
    present = {name for name, value in index.items() if isinstance(value, list) and value != [None, None]}
    assert present == COMPONENTS[family]
    assert all((model / name).is_dir() for name in COMPONENTS[family])  # SimpleTuner loads by subfolder
    weights = [p for p in model.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".pth"}]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    scheduler = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert {key: scheduler[key] for key in asdict(FAMILIES[family].scheduler)} == asdict(FAMILIES[family].scheduler)
    assert resolve_family(str(model), None).name == family


def test_flux_tokenizers_take_clip_77_and_t5_512_tokens(tiny):
    import torch
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny("flux").model, use_safetensors=True)
    assert pipe.tokenizer.model_max_length == 77
    # SimpleTuner forces 512 T5 tokens for FLUX: the tiny T5 must take them.
    tokens = pipe.tokenizer_2("a red circle", padding="max_length", max_length=512, return_tensors="pt")
    assert tokens.input_ids.shape == (1, 512)
    assert (tokens.input_ids[0, :4] != pipe.tokenizer_2.unk_token_id).all()
    with torch.no_grad():
        hidden = pipe.text_encoder_2(tokens.input_ids).last_hidden_state
    assert hidden.shape == (1, 512, 32) and torch.isfinite(hidden).all()


def test_qwen_template_prefix_is_the_tokens_the_pipeline_drops(tiny):
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline.from_pretrained(tiny("qwen_image").model, use_safetensors=True)
    prefix = pipe.prompt_template_encode.split("{}")[0]
    assert len(pipe.tokenizer(prefix).input_ids) == pipe.prompt_template_encode_start_idx


def test_z_image_prompt_takes_the_chat_template_as_the_pipeline_formats_it(tiny):
    """ZImagePipeline and SimpleTuner call apply_chat_template(enable_thinking=True): the user turn, an open
    assistant turn; ComfyUI's Z-Image tokenizer writes the same text (comfy/text_encoders/z_image.py)."""
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline.from_pretrained(tiny("z_image").model, use_safetensors=True)
    messages = [{"role": "user", "content": "a red circle"}]
    template = dict(tokenize=False, add_generation_prompt=True, enable_thinking=True)
    text = pipe.tokenizer.apply_chat_template(messages, **template)
    assert text == "<|im_start|>user\na red circle<|im_end|>\n<|im_start|>assistant\n"
    embeds = pipe.encode_prompt("a red circle", do_classifier_free_guidance=False)[0][0]
    assert embeds.shape == (len(pipe.tokenizer(text).input_ids), 16)  # the padding is dropped


def test_build_is_idempotent_and_rebuilds_for_other_arguments(tmp_path):
    path = build_tiny_model("qwen_image", tmp_path / "model")
    before = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    assert build_tiny_model("qwen_image", path) == path
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == before

    weights = path / "transformer" / "diffusion_pytorch_model.safetensors"
    seed0 = weights.read_bytes()
    build_tiny_model("qwen_image", path, seed=1)
    assert json.loads((path / STAMP_NAME).read_text())["seed"] == 1
    assert weights.read_bytes() != seed0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folders left


def test_interrupted_build_leaves_nothing_that_passes_for_a_model(tmp_path, monkeypatch):
    import glance.tiny

    real_build = glance.tiny._build_pipeline

    class Interrupted:
        def __init__(self, pipeline):
            self.pipeline = pipeline

        def save_pretrained(self, folder, **kwargs):
            self.pipeline.save_pretrained(folder, **kwargs)
            raise KeyboardInterrupt

    monkeypatch.setattr(glance.tiny, "_build_pipeline", lambda *args: Interrupted(real_build(*args)))
    with pytest.raises(KeyboardInterrupt):
        build_tiny_model("qwen_image", tmp_path / "model")
    assert list(tmp_path.iterdir()) == []

    # A folder holding something without glance's stamp is refused, not reused or replaced.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model_index.json").write_text("{}")
    with pytest.raises(GlanceError, match="is not a tiny model built by glance"):
        build_tiny_model("qwen_image", tmp_path / "other")


def test_bad_arguments():
    with pytest.raises(GlanceError, match="unknown model family"):
        build_tiny_model("sdxl", "unused")
    with pytest.raises(GlanceError, match="unknown tiny model scale"):
        build_tiny_model("flux", "unused", scale="huge")
    with pytest.raises(GlanceError, match="flux family only"):
        build_tiny_model("sd3", "unused", scale="bench")


def test_sample_pair_is_deterministic_and_not_trivial(tmp_path):
    from PIL import Image

    image = write_sample_pair(tmp_path / "a")
    assert image == tmp_path / "a" / "glance.png"
    assert (tmp_path / "a" / "glance.txt").read_text().strip()
    assert write_sample_pair(tmp_path / "b").read_bytes() == image.read_bytes()
    assert write_sample_pair(tmp_path / "a") == image  # the same content again: left alone
    with Image.open(image) as picture:
        assert picture.mode == "RGB" and picture.size == (128, 128)
        assert len(picture.getcolors(maxcolors=128 * 128)) > 100
    with pytest.raises(GlanceError, match="exists and differs"):
        write_sample_pair(tmp_path / "a", size=64)


def test_tokenizers_are_the_same_in_every_process():
    # The `tokenizers` library's trainers broke ties by a per-process hash: each process got other token
    # ids, so a tiny model (or a fresh pretraining of the shapes model) could not be reproduced.
    import subprocess
    import sys

    script = (
        "import json, hashlib\n"
        "from glance.tiny.text import clip_tokenizer, qwen_tokenizer, t5_tokenizer\n"
        "for make in (clip_tokenizer, t5_tokenizer, qwen_tokenizer):\n"
        "    vocab = json.dumps(make().get_vocab(), sort_keys=True)\n"
        "    print(make.__name__, hashlib.sha256(vocab.encode()).hexdigest())\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert len(runs[0].splitlines()) == 3 and runs[0] == runs[1]
