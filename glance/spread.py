"""--num-processes: the prompt x seed list spread over N processes with accelerate.

The parent writes a job file (the options and the numbered images) and runs
`accelerate launch --num_processes N -m glance.spread JOB_FILE`. Each process loads its own
pipeline on its own device (accelerate's PartialState: cuda:i, or the CPU) and renders every N-th
image of the list, so each image is rendered once under the name it has with one process. The
processes report progress as JSON lines on stdout, which the parent shows as one live line with
a slot per process, and their results in a file each, which the parent merges in list order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from glance.batch import ImageJob
from glance.eval_plan import EvalTask
from glance.eval_render import EvalImage
from glance.families import GlanceError
from glance.infer_options import InferOptions
from glance.render import ImageResult, render_images, result_line

EVENT_PREFIX = "glance-event "  # a worker's stdout line meant for the parent
TAIL_LINES = 2000  # of the processes' own output, kept to find a failure's cause in (a traceback and accelerate's)


class EvalSpread(BaseModel):
    """`glance eval`'s part of a job: each run's options and every image to render (glance/eval_render.py)."""

    model_config = ConfigDict(extra="forbid")

    runs: dict[str, dict]  # run folder -> InferOptions as JSON
    tasks: list[EvalTask]
    lora_scale: float = 1.0


class SpreadJob(BaseModel):
    """What every process reads: the run's options, the full image list, how to report."""

    model_config = ConfigDict(extra="forbid")

    options: dict  # InferOptions as JSON
    jobs: list[ImageJob]
    device: str  # "cuda" or "cpu": each process takes its own device of this kind
    verbose: bool = False
    quiet: bool = False
    eval: EvalSpread | None = None  # `glance eval`: these tasks instead of `jobs`


class WorkerReport(BaseModel):
    """One process's images and load time, written to `result-<rank>.json` beside the job file."""

    images: list[dict]  # ImageResult as JSON
    load_seconds: float


class _Shown:
    """A worker's current image, shown in the parent's live display as a bar of its own."""

    log_tenths = False
    counting = True

    def __init__(self, key: str, text: str, step: int, total: int, label: str, note: str):
        self.key, self.text, self.step, self.total, self.label, self.note = key, text, step, total, label, note

    def render(self) -> str:
        return self.text


def render_spread(
    options: InferOptions, jobs: list[ImageJob], device: str, reporter
) -> tuple[list[ImageResult], float]:
    """Run the workers, relay their progress, merge their results in list order; (results, load seconds)."""
    job = SpreadJob(
        options=options.model_dump(mode="json"), jobs=jobs, device=device, verbose=reporter.verbose,
        quiet=reporter.quiet,
    )  # fmt: skip
    reports = _run_workers(job, options.num_processes, reporter)
    index = {job.out: job.index for job in jobs}
    results = sorted(
        (ImageResult.model_validate(image) for report in reports for image in report.images),
        key=lambda result: index[result.image],
    )
    for result in results:
        reporter.result(result_line(result))
    return results, max(report.load_seconds for report in reports)


def render_eval_spread(
    base: InferOptions, runs: dict[str, InferOptions], tasks: list[EvalTask], device: str, reporter, lora_scale: float
) -> tuple[list[EvalImage], float]:
    """`glance eval`'s images over the processes: each renders every N-th task (glance/eval_render.py)."""
    spread = EvalSpread(runs={run: o.model_dump(mode="json") for run, o in runs.items()}, tasks=tasks,
                        lora_scale=lora_scale)  # fmt: skip
    job = SpreadJob(options=base.model_dump(mode="json"), jobs=[], device=device, verbose=reporter.verbose,
                    quiet=reporter.quiet, eval=spread)  # fmt: skip
    reports = _run_workers(job, base.num_processes, reporter)
    images = [EvalImage.model_validate(image) for report in reports for image in report.images]
    return images, max(report.load_seconds for report in reports)


def _run_workers(job: SpreadJob, count: int, reporter) -> list[WorkerReport]:
    """Launch the processes on `job`, relay their progress, and read each one's report."""
    from glance.failure import failure_cause
    from glance.simpletuner import accelerate_config_yaml

    device = job.device
    if device == "mps":
        raise GlanceError("--num-processes needs cuda devices or the CPU, not mps")
    if device == "cuda":
        import torch

        if torch.cuda.device_count() < count:
            raise GlanceError(f"--num-processes {count}: only {torch.cuda.device_count()} CUDA device(s) here")
    with tempfile.TemporaryDirectory(prefix="glance-spread-") as folder:
        folder = Path(folder)
        job_file = folder / "job.json"
        job_file.write_text(job.model_dump_json())
        (folder / "accelerate.yaml").write_text(accelerate_config_yaml(count, "no"))
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(folder / "accelerate.yaml"),
            "--num_processes", str(count),
            "--main_process_port", str(_free_port()),
            "--mixed_precision", "no",  # the YAML "no" reads as false; the flag is the string
            "--dynamo_backend", "no",
            "-m", "glance.spread", str(job_file),
        ]  # fmt: skip
        package_root = str(Path(__file__).resolve().parent.parent)  # the workers import this same glance
        pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        env = dict(os.environ, PYTHONPATH=pythonpath, PYTHONUNBUFFERED="1")
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        error: list[str] = []
        try:
            process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as exc:
            raise GlanceError(f"cannot start accelerate: {exc.strerror or exc}") from None

        def relay() -> None:
            for line in process.stdout:
                line = line.rstrip("\n")
                if not line.startswith(EVENT_PREFIX):
                    tail.append(line)
                    reporter.raw("accelerate", line)
                    continue
                event = json.loads(line[len(EVENT_PREFIX) :])
                if "error" in event:
                    error.append(event["error"])
                elif "progress" in event:
                    slot = f"process {event['rank']}"
                    step, total = event["step"], event["total"]
                    reporter.progress(_Shown(slot, event["progress"], step, total, event["label"], event["note"]))
                elif "message" in event:
                    reporter.message(event["message"])

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        try:
            code = process.wait()
        except KeyboardInterrupt:
            process.terminate()
            process.wait()
            raise
        reader.join(timeout=10)
        reporter.done()
        if error:
            raise GlanceError(error[0])
        if code != 0:
            # The cause first, as a failed training phase names it: the last exception in the output.
            print(f"a process: {failure_cause(list(tail)) or 'no exception in its output'}", file=sys.stderr)
            raise GlanceError(f"--num-processes {count}: a process failed (exit code {code})")
        return [
            WorkerReport.model_validate_json((folder / f"result-{rank}.json").read_text()) for rank in range(count)
        ]


def _free_port() -> int:
    """A free TCP port for the processes' rendezvous (two runs at once must not share one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- inside each process ------------------------------------------------------------------------


class _EventReporter:
    """A Reporter for a worker: everything goes to the parent as JSON lines on stdout."""

    def __init__(self, rank: int, verbose: bool, quiet: bool):
        self.rank, self.verbose, self.quiet = rank, verbose, quiet
        self._last = 0.0

    def _emit(self, **event) -> None:
        print(EVENT_PREFIX + json.dumps({"rank": self.rank, **event}), flush=True)

    def progress(self, progress) -> None:
        if self.quiet or self.verbose:
            return
        now = time.monotonic()
        if progress.step < progress.total and now - self._last < 0.1:  # at most ten lines a second
            return
        self._last = now
        self._emit(
            progress=f"[{self.rank}] {progress.render()}",
            label=f"[{self.rank}] {progress.label}",
            note=progress.note,
            step=progress.step,
            total=progress.total,
        )

    def message(self, text: str) -> None:
        if not self.quiet:
            self._emit(message=text)

    def result(self, text: str) -> None:  # the parent prints the result lines, in list order
        pass

    def done(self) -> None:
        pass


def worker_main(job_file: Path) -> int:
    from accelerate import PartialState

    job = SpreadJob.model_validate_json(Path(job_file).read_text())
    state = PartialState(cpu=job.device == "cpu")
    rank, count = state.process_index, state.num_processes
    reporter = _EventReporter(rank, job.verbose, job.quiet)
    device = "cpu" if job.device == "cpu" else str(state.device)
    mine = job.jobs[rank::count]
    try:
        options = InferOptions.model_validate(job.options)
        if job.eval is not None:
            results, load_seconds = _eval_worker(options, job.eval, rank, count, device, reporter)
        else:
            results, load_seconds = render_images(options, mine, device, reporter) if mine else ([], 0.0)
    except GlanceError as exc:
        reporter._emit(error=str(exc))
        return 1
    report = WorkerReport(images=[r.model_dump(mode="json") for r in results], load_seconds=load_seconds)
    (Path(job_file).parent / f"result-{rank}.json").write_text(report.model_dump_json())
    return 0


def _eval_worker(options: InferOptions, spread: EvalSpread, rank: int, count: int, device: str, reporter):
    from glance.eval_render import render_eval_tasks

    mine = spread.tasks[rank::count]
    if not mine:
        return [], 0.0
    runs = {run: InferOptions.model_validate(o) for run, o in spread.runs.items()}
    return render_eval_tasks(options, runs, mine, device, reporter, lora_scale=spread.lora_scale)


if __name__ == "__main__":
    sys.exit(worker_main(Path(sys.argv[1])))
