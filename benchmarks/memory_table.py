"""Print docs/memory.md's table: the plan glance picks for each known model on common cards, at 1024 px.

    .venv/bin/python benchmarks/memory_table.py

Every figure is glance's own estimate (glance/memory/plans.py over the known sizes in
glance/memory/sizes.py), so the page cannot drift from the code: tests/test_docs.py checks the page
holds exactly this output.
"""

from __future__ import annotations

from glance.families import resolve_family
from glance.family import GlanceError
from glance.memory.plans import plan_sampling, plan_training
from glance.memory.sizes import KNOWN_SIZES

CARDS = (12, 16, 24, 32, 48, 80)
RESOLUTION = 1024


def _cell(plan, *args, **kwargs) -> str:
    """One plan with its estimate, or what the lightest one needs when none fits."""
    try:
        chosen = plan(*args, **kwargs)
    except GlanceError as error:  # "no ... plan fits 12.0 GiB (...): the smallest, X, needs an estimated Y GiB"
        needs = str(error).rsplit("needs an estimated ", 1)[-1].split(" GiB")[0]
        return f"none fits (the lightest needs {needs} GiB)"
    return f"{chosen.label()} ({chosen.estimate_gib:.1f} GiB)"


def table() -> str:
    lines = ["| model | card | training plan (estimated peak) | sampling plan (estimated peak) |",
             "| --- | ---: | --- | --- |"]  # fmt: skip
    for model, sizes in KNOWN_SIZES.items():
        family = resolve_family(model, None)
        for card in CARDS:
            training = _cell(plan_training, sizes, family=family.name, resolution=RESOLUTION,
                             rank=family.recipe.rank, cuda=True, gpu_memory=card)  # fmt: skip
            sampling = _cell(plan_sampling, sizes, device="cuda", width=RESOLUTION, height=RESOLUTION,
                             gpu_memory=card)  # fmt: skip
            lines.append(f"| `{model}` | {card} GB | {training} | {sampling} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(), end="")
