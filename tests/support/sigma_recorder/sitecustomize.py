"""Test-only: records the sigmas SimpleTuner really mixes noise with, one JSON line per training batch.

Put first on PYTHONPATH of SimpleTuner's processes by tests/support/sigma_recording.py's wrapper. It runs
glance's own CPU shim (the sitecustomize it shadows), then wraps ModelFoundation._prepare_flow_noisy_latents
(simpletuner/helpers/models/common.py), which receives each batch's sigmas after sample_flow_sigmas and any
family hook, right before the noisy latents are made from them. The log goes to $GLANCE_SIGMA_LOG.
"""

import importlib.abc
import importlib.machinery
import json
import os
import runpy
import sys

_shim = os.environ.get("GLANCE_CPU_SHIM")
if _shim:
    runpy.run_path(_shim)

TARGET = "simpletuner.helpers.models.common"


def _patch(module):
    original = module.ModelFoundation._prepare_flow_noisy_latents

    def recording(self, batch, *args, **kwargs):
        with open(os.environ["GLANCE_SIGMA_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps([float(s) for s in batch["sigmas"].flatten().tolist()]) + "\n")
        return original(self, batch, *args, **kwargs)

    module.ModelFoundation._prepare_flow_noisy_latents = recording


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_then_patch
        return spec


if os.environ.get("GLANCE_SIGMA_LOG"):
    sys.meta_path.insert(0, _PatchOnImport())
