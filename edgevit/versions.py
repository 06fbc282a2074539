"""The versions of edgevit and the tools an artifact or a measurement depends on."""

from __future__ import annotations

import importlib.metadata
import platform

from . import __version__

TOOLS = (
    "torch",
    "executorch",
    "torchao",
    "coremltools",
    "litert-torch",
    "ai-edge-litert",
    "onnx",
    "onnxruntime",
    "numpy",
)


def tool_versions() -> dict[str, str]:
    versions = {"edgevit": __version__, "python": platform.python_version()}
    for pkg in TOOLS:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
