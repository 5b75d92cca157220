"""Shared fixtures. Heavy ones are session-scoped: a real SimpleTuner phase costs ~45 s."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the hub

from support.gpu_check_run import gpu_check_run  # noqa: E402,F401  (the quantized run, via benchmarks/gpu_check.py)
from support.tiny_models import tiny  # noqa: E402,F401  (tiny offline pipelines and LoRAs, per family)
from support.training import trained_run  # noqa: E402,F401  (the session's one real training run)
