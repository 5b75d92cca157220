#!/usr/bin/env python3
"""A stand-in `simpletuner` for failure-path tests: FAKE_SIMPLETUNER_MODE picks the behaviour,
FAKE_SIMPLETUNER_MODE_SLOW / _FAST one phase's.

crash       prints a few lines and exits 1
crash-later as crash, once both phases have started (two phases at once)
noweights   prints progress and exits 0 without writing weights
badweights  prints progress and exits 0 with an unreadable weights file
hang        starts a grandchild (`sleep`) in a session of its own, as `simpletuner train` starts
            `accelerate launch`, then waits forever
ok          prints tqdm-like progress and writes a weights file, like a successful run
Each call appends its argv to $FAKE_SIMPLETUNER_CALLS, and a line {"phase", "pids"} (its own pid,
and its grandchild's when it hangs) to $FAKE_SIMPLETUNER_PIDS when that is set.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

config_path = Path(sys.argv[sys.argv.index("--env") + 1])
config = json.loads(config_path.read_text())
phase = Path(config["output_dir"]).name.removeprefix("glance-")
mode = os.environ.get(f"FAKE_SIMPLETUNER_MODE_{phase.upper()}") or os.environ.get("FAKE_SIMPLETUNER_MODE", "ok")
pids_file = os.environ.get("FAKE_SIMPLETUNER_PIDS")


def record_pids(*pids: int) -> None:
    if pids_file:
        with open(pids_file, "a") as handle:
            handle.write(json.dumps({"phase": phase, "pids": list(pids)}) + "\n")


def started_phases() -> set[str]:
    lines = Path(pids_file).read_text().splitlines() if pids_file and Path(pids_file).exists() else []
    return {json.loads(line)["phase"] for line in lines}

with open(os.environ["FAKE_SIMPLETUNER_CALLS"], "a") as calls:
    record = {"argv": sys.argv[1:], "output_dir": config["output_dir"], "cwd": os.getcwd(), "mode": mode}
    calls.write(json.dumps(record) + "\n")

total = config["max_train_steps"]
print("Using environment:", config_path, flush=True)
print("\x1b[32m(Rank: 0)  | INFO     | Loading the model\x1b[0m", flush=True)  # SimpleTuner colours even a pipe
if mode == "hang":
    grandchild = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    record_pids(os.getpid(), grandchild.pid)
    while True:
        time.sleep(1)
record_pids(os.getpid())
if mode == "crash-later":
    while len(started_phases()) < 2:
        time.sleep(0.05)
    mode = "crash"
if mode == "crash":
    print(f"RuntimeError: CUDA out of memory (pretend, {phase})", flush=True)
    sys.exit(1)
for step in range(1, total + 1):
    sys.stdout.write(
        f"\rEpoch 1/1, Steps: {step}/{total} [00:01<00:00, 1.0s/it, lr=0.0005, step_loss={0.5 / step:.4f}]"
    )
    sys.stdout.flush()
print(flush=True)
out = Path(config["output_dir"])
if mode == "ok":  # a rank-2 LoRA for one layer, in SimpleTuner's format (no adapter metadata)
    import numpy as np
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    layer = "transformer.single_transformer_blocks.0.attn.to_q"
    tensors = {
        f"{layer}.lora_A.weight": rng.random((2, 8), "float32"),
        f"{layer}.lora_B.weight": rng.random((8, 2), "float32"),
    }
    save_file(tensors, out / "pytorch_lora_weights.safetensors", metadata={"format": "pt"})
if mode == "badweights":
    out.mkdir(parents=True, exist_ok=True)
    (out / "pytorch_lora_weights.safetensors").write_bytes(b"not a safetensors file")
