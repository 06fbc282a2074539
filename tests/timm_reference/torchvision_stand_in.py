"""An import-time stand-in for torchvision, which has no CPU build for this torch on the registry.

timm imports torchvision names at module level (data transforms, FrozenBatchNorm2d) that its CrossViT
and MViTv2 code never calls. Every ``torchvision.*`` module imported after this one is empty: its names are
classes that raise when instantiated, so a reference model that did use torchvision would fail loudly.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


class _AbsentMeta(type):
    def __getattr__(cls, attr: str) -> str:  # enum members such as InterpolationMode.BICUBIC
        if attr.startswith("__"):
            raise AttributeError(attr)
        return attr


class Absent(metaclass=_AbsentMeta):
    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError("torchvision is not installed here: this name is a stand-in")


def _module_getattr(attr: str) -> type:
    if attr.startswith("__"):
        raise AttributeError(attr)
    return Absent


class _StandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _module_getattr
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


sys.meta_path.insert(0, _StandIn())
