"""`glance eval`'s outputs: eval.json (its schema is in docs/commands.md), eval.md, the compare sheet, the table.

The statistics come from glance/eval_stats.py; this module only arranges them. The model card's
section (`glance push`) is eval.md's table and verdict, read back from the run's eval.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from glance import __version__
from glance.eval_stats import (
    ADHERENCE,
    BOOTSTRAP_SEED,
    CLOSENESS,
    CONFIDENCE,
    PULL,
    RESAMPLES,
    Interval,
    compare,
    first_present,
    mean_interval,
    share_text,
    verdict_line,
)
from glance.files import write_atomic

SCHEMA_VERSION = 1
# The scores the table shows, when present, in this order (eval.json has every score).
SHOWN = ("ssim", "dino", "clip_image", "clip_score", "judge_pass", "judge_agree", "crispness", "dino_pull",
         "clip_pull", "judge_pull")  # fmt: skip


def build_report(*, options, manifests, runs, columns, images, scores, prompts, scorers, scorer_models, out,
                 load_seconds, render_seconds, trainings) -> dict:  # fmt: skip
    by_column: dict[str, list[tuple]] = {c.name: [] for c in columns}
    for image, score in zip(images, scores, strict=True):
        by_column[image.column].append((image, score))
    report_columns = []
    for column in columns:
        entries = by_column[column.name]
        keys = list(dict.fromkeys(k for _, s in entries for k in s))
        means = {k: mean_interval([s.get(k) for _, s in entries]) for k in keys}
        seconds = [image.seconds for image, _ in entries]
        report_columns.append({
            "name": column.name,
            "kind": column.kind,
            "steps": column.steps,
            "run": str(column.run) if column.run is not None else None,
            "seconds": round(sum(seconds), 2),  # rendering this column (cached images: when they were rendered)
            "seconds_per_image": round(sum(seconds) / max(1, len(seconds)), 3),
            "rendered": sum(1 for image, _ in entries if not image.cached),
            "cached": sum(1 for image, _ in entries if image.cached),
            "images": [
                {"prompt": image.prompt, "seed": image.seed, "path": str(Path(image.path).relative_to(out)),
                 "seconds": round(image.seconds, 3), "scores": score}
                for image, score in entries
            ],
            "mean": {k: v.model_dump() for k, v in means.items() if v is not None},
        })  # fmt: skip

    comparisons, verdicts = [], []
    named = {c["name"]: c for c in report_columns}
    first = str(runs[0])
    for column in (c for c in columns if c.kind == "glance"):
        own = [img["scores"] for img in named[column.name]["images"]]
        suffix = "" if str(column.run) == first else f"[{column.name}]"
        base = named.get(f"base-{column.steps}")
        schedule = next((c for c in columns if c.kind == "schedule" and c.sigmas == column.sigmas), None)
        against_base = against_schedule = None
        if base is not None:
            against_base = compare(column.name, base["name"], own, [i["scores"] for i in base["images"]],
                                   pull_suffix=suffix)  # fmt: skip
            comparisons.append(against_base.model_dump())
        if schedule is not None:
            other = [i["scores"] for i in named[schedule.name]["images"]]
            against_schedule = compare(column.name, schedule.name, own, other, pull_suffix=suffix)
            comparisons.append(against_schedule.model_dump())
        if against_base is not None:
            verdicts.append(verdict_line(column.name, column.steps, options.reference, against_base, against_schedule))
    scorer_ids = [{"name": "ssim", "model": "torchmetrics structural_similarity_index_measure"}]
    for name in scorers:
        scorer_ids.append({"name": name, "model": "glance/shapes.py judge" if name == "judge" else scorer_models[name]})
    return {
        "schema": SCHEMA_VERSION,
        "glance_version": __version__,
        "model": manifests[0].model,
        "model_revision": manifests[0].model_revision,
        "runs": [str(run) for run in runs],
        "training_images": {column.name: str(trainings[str(column.run)].path) for column in columns if column.run},
        "reference": f"base-{options.reference}",
        "prompts": len(prompts),
        "seeds": list(options.seeds),
        "images_per_column": len(prompts) * len(options.seeds),
        "scorers": scorer_ids,
        "measures": {"closeness": _measure(CLOSENESS, report_columns), "adherence": _measure(ADHERENCE, report_columns),
                     "pull": _measure(PULL, report_columns)},  # fmt: skip
        "bootstrap": {"resamples": RESAMPLES, "confidence": CONFIDENCE, "seed": BOOTSTRAP_SEED, "method": "percentile"},
        "lora_scale": options.lora_scale,
        "load_seconds": round(load_seconds, 2),
        "render_seconds": round(render_seconds, 2),
        "columns": report_columns,
        "comparisons": comparisons,
        "verdict": "\n".join(verdicts),
        "sheet": None,
    }


def _measure(names, columns) -> str | None:
    return first_present(names, [img["scores"] for c in columns for img in c["images"]])


def _cell(mean: dict | None, key: str) -> str:
    if mean is None:
        return "-"
    return Interval(**mean).show(key)


def render_table(report: dict) -> str:
    """The table on stdout: per column n, seconds per image and each shown score with its interval; then the verdict."""
    keys = [k for k in SHOWN if any(k in c["mean"] for c in report["columns"])]
    rows = [["column", "n", "s/image", *keys]]
    for c in report["columns"]:
        seconds = f"{c['seconds_per_image']:.2f}" + (" (cached)" if c["cached"] and not c["rendered"] else "")
        rows.append([c["name"], str(len(c["images"])), seconds, *(_cell(c["mean"].get(k), k) for k in keys)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.append(_comparison_lines(report, markdown=False))
    lines.append(f"verdict: {report['verdict']}" if report["verdict"] else "verdict: none (no glance column)")
    return "\n".join(lines)


def _comparison_lines(report: dict, markdown: bool) -> str:
    out = []
    for c in report["comparisons"]:
        closer = c["closer"]
        parts = []
        if closer is not None:
            share = share_text(Interval(**closer))
            parts.append(f"closer to {report['reference']} on {share} ({c['closeness']})")
        if c.get("adherence_diff"):
            parts.append(f"{c['adherence']} {Interval(**c['adherence_diff']).show(c['adherence'], signed=True)}")
        if c.get("pull_diff"):
            parts.append(f"pull ({c['pull']}) {Interval(**c['pull_diff']).show(c['pull'], signed=True)}")
        bullet = "- " if markdown else "  "
        out.append(f"{bullet}{c['column']} vs {c['against']}: " + ", ".join(parts))
    return "\n".join(out)


def markdown(report: dict) -> str:
    """eval.md: the table with intervals, the paired comparisons, the verdict, what scored and over how many images."""
    keys = [k for k in SHOWN if any(k in c["mean"] for c in report["columns"])]
    head = "| column | n | s / image | " + " | ".join(keys) + " |\n"
    head += "| --- | ---: | ---: | " + " | ".join("---:" for _ in keys) + " |\n"
    body = "".join(
        f"| {c['name']} | {len(c['images'])} | {c['seconds_per_image']:.2f} | "
        + " | ".join(_cell(c["mean"].get(k), k) for k in keys) + " |\n"
        for c in report["columns"]
    )  # fmt: skip
    scorers = ", ".join(f"{s['name']} ({s['model']})" for s in report["scorers"])
    verdict = "\n>\n".join(f"> {line}" for line in report["verdict"].splitlines()) or "> no glance column"
    return (
        f"## glance eval\n\n{verdict}\n\n{head}{body}\n"
        f"{report['prompts']} prompts x seeds {','.join(map(str, report['seeds']))} "
        f"({report['images_per_column']} images per column); reference {report['reference']}; "
        f"means with {report['bootstrap']['confidence']:.0%} bootstrap intervals over the images "
        f"({report['bootstrap']['resamples']} resamples, seed {report['bootstrap']['seed']}). Scorers: {scorers}. "
        f"Closeness to the reference: `{report['measures']['closeness']}`; adherence: "
        f"`{report['measures']['adherence']}`; pull toward the training image: `{report['measures']['pull']}`.\n\n"
        f"Paired, per image:\n\n{_comparison_lines(report, markdown=True)}\n"
    )


def write_outputs(report: dict, images: list, columns: list, out: Path, sheet_rows: int) -> None:
    """eval.json, eval.md and the compare sheet (rows spread evenly over the prompt x seed list)."""
    from glance.eval import JSON_NAME, MD_NAME, SHEET_NAME

    sheet = out / SHEET_NAME
    _write_sheet(images, columns, report, sheet, sheet_rows)
    report["sheet"] = SHEET_NAME
    write_atomic(out / JSON_NAME, json.dumps(report, indent=2) + "\n")
    write_atomic(out / MD_NAME, markdown(report))


def _write_sheet(images: list, columns: list, report: dict, path: Path, rows: int) -> None:
    from glance.render import ImageResult
    from glance.sheet import write_compare_sheet

    grid: dict[str, dict[int, ImageResult]] = {c.name: {} for c in columns}
    for image in images:
        grid[image.column][image.index] = ImageResult(image=image.path, prompt=image.prompt, seed=image.seed,
                                                      seconds=image.seconds, denoise_seconds=0.0,
                                                      summary=image.summary)  # fmt: skip
    count = report["images_per_column"]
    shown_rows = min(rows, count)
    picked = sorted({round(i * (count - 1) / max(1, shown_rows - 1)) for i in range(shown_rows)})
    names = [c.name for c in columns]
    shown = [grid[names[-1]][i].model_copy(update={"bases": [grid[n][i] for n in names[:-1]]}) for i in picked]
    adherence, closeness = report["measures"]["adherence"], report["measures"]["closeness"]
    notes = {}
    for i, c in enumerate(report["columns"]):
        parts = [f"{k} {_cell(c['mean'].get(k), k).split(' (')[0]}" for k in (adherence, closeness) if k in c["mean"]]
        notes[i] = ", ".join(parts)
    write_compare_sheet(shown, path, notes, titles=names)


def card_section(run_dir: Path) -> str | None:
    """The model card's evaluation section: eval.md of the run's eval (RUN/eval/eval.json), if there is one."""
    from glance.eval import JSON_NAME

    path = Path(run_dir) / "eval" / JSON_NAME
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return markdown(report).replace("## glance eval", "## Evaluation (`glance eval`)", 1)
