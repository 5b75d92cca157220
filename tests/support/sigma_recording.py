"""A `simpletuner` that records the sigmas it trains on: the real one, started with a test-only sitecustomize first.

`recording_simpletuner(folder, log)` writes an executable for $GLANCE_SIMPLETUNER. glance puts its CPU shim
first on PYTHONPATH; the wrapper puts tests/support/sigma_recorder before it, and that sitecustomize runs the
shim itself, so the phase runs exactly as without the recorder.
"""

import json
import shutil
import stat
import sys
from pathlib import Path

from glance.simpletuner import CPU_SHIM_DIR

RECORDER = Path(__file__).parent / "sigma_recorder"


def recording_simpletuner(folder: Path) -> Path:
    real = shutil.which("simpletuner", path=str(Path(sys.executable).parent)) or shutil.which("simpletuner")
    assert real, "simpletuner is not installed"
    script = Path(folder) / "simpletuner"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"paths = [{str(RECORDER)!r}, *filter(None, [os.environ.get('PYTHONPATH')])]\n"
        "os.environ['PYTHONPATH'] = os.pathsep.join(paths)\n"
        f"if {str(CPU_SHIM_DIR)!r} in os.environ['PYTHONPATH'].split(os.pathsep):\n"
        f"    os.environ['GLANCE_CPU_SHIM'] = {str(CPU_SHIM_DIR / 'sitecustomize.py')!r}\n"
        f"os.execv({real!r}, [{real!r}, *sys.argv[1:]])\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def read_sigma_log(path: Path) -> list[list[float]]:
    """Every recorded batch's sigmas, in training order."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
