"""Shared fixtures. Heavy ones are session-scoped: a real SimpleTuner phase costs ~45 s."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the hub
# One OpenMP thread per process: two workers (and the SimpleTuner and sampling processes they start) each
# spinning two threads on two cores oversubscribe them; one each took the suite from 26 to 19 minutes.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from support.family_runs import chroma_run, flux2_run, z_image_run  # noqa: E402,F401  (one real run per newer family)
from support.gpu_check_run import gpu_check_run  # noqa: E402,F401  (the quantized run, via benchmarks/gpu_check.py)
from support.tiny_models import tiny  # noqa: E402,F401  (tiny offline pipelines and LoRAs, per family)
from support.training import trained_run  # noqa: E402,F401  (the session's one real training run)

# The fast tier (`pytest -m "not slow"`): a test is slow when it trains or samples for real, which
# is when it uses one of these fixtures (directly or through another fixture); a test that runs
# SimpleTuner or a pipeline on its own says so with @pytest.mark.slow.
SLOW_FIXTURES = {"trained_run", "gpu_check_run", "tiny", "chroma_run", "z_image_run", "flux2_run"}

# The suite runs on two processes (`-n 2 --dist loadgroup`, pytest-xdist): each expensive session
# fixture is built once, on the one process that runs every test using it; other tests stay with
# their module, so a module's fixtures are built once too.
SHARED_RUNS = ("trained_run", "gpu_check_run", "chroma_run", "z_image_run", "flux2_run")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
        group = next((name for name in SHARED_RUNS if name in fixtures), item.module.__name__)
        item.add_marker(pytest.mark.xdist_group(group))
