"""Put on PYTHONPATH of SimpleTuner's child processes by glance, on machines without CUDA only.

SimpleTuner 4.10.1's collate step calls `Tensor.pin_memory()` whenever MPS is absent, which raises
"Found no NVIDIA driver" on a CPU-only machine. Pinning is only a transfer optimisation, so it is
made a no-op here. torch is patched when something imports it, never imported by this file.
"""

import importlib.abc
import importlib.machinery
import sys


def _patch(torch):
    if not torch.cuda.is_available():
        torch.Tensor.pin_memory = lambda self, *args, **kwargs: self


class _PatchTorchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "torch":
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


sys.meta_path.insert(0, _PatchTorchOnImport())
