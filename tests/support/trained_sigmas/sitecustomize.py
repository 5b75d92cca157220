"""Test-only: records the sigmas SimpleTuner actually trains on, after the model's own prepare_batch.

Put on PYTHONPATH of `glance train` with GLANCE_TEST_TRAINED_SIGMAS=<file>; every training step
appends one JSON line {"output_dir", "sigmas", "timesteps"} read from the batch the model is fed,
so a family that respaces the sampled sigmas (Chroma, chroma/model.py:854-865) shows it here.
(On a CPU-only machine glance's own shim comes first on PYTHONPATH and runs this file after it.)
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys

TRAINER = "simpletuner.helpers.training.trainer"


def _patch(module):
    trainer = module.Trainer
    prepare_batch = trainer.prepare_batch

    def recording_prepare_batch(self, batch):
        prepared = prepare_batch(self, batch)
        if isinstance(prepared, dict) and prepared.get("sigmas") is not None:
            line = {
                "output_dir": str(getattr(self.config, "output_dir", "")),
                "sigmas": prepared["sigmas"].detach().float().flatten().tolist(),
                "timesteps": prepared["timesteps"].detach().float().flatten().tolist(),
            }
            with open(os.environ["GLANCE_TEST_TRAINED_SIGMAS"], "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
        return prepared

    trainer.prepare_batch = recording_prepare_batch


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TRAINER:
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


if os.environ.get("GLANCE_TEST_TRAINED_SIGMAS"):
    sys.meta_path.insert(0, _PatchOnImport())
