"""Put on PYTHONPATH of SimpleTuner's child processes by glance, on machines without CUDA only.

SimpleTuner 4.10.1's collate step calls `Tensor.pin_memory()` whenever MPS is absent, which raises
"Found no NVIDIA driver" on a CPU-only machine. Pinning is only a transfer optimisation, so it is
made a no-op here. torch is patched when something imports it, never imported by this file.

Being first on PYTHONPATH, this file hides any other sitecustomize (the user's, the system's):
that one is run after it, so glance adds to the environment and takes nothing away.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
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


def _run_the_shadowed_sitecustomize():
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        folder = os.path.abspath(entry or os.curdir)
        candidate = os.path.join(folder, "sitecustomize.py")
        if folder != here and os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_glance_shadowed_sitecustomize", candidate)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            return


_run_the_shadowed_sitecustomize()
