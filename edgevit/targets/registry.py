"""The Target protocol and the registry every target module adds itself to.

A target is one module under ``edgevit/targets/`` that defines a :class:`Target` subclass and calls
:func:`register_target` at its foot; the registry imports every module of the package the first time it is
asked, so nothing else lists targets. Recipes, ``lower()``, the export flow, the runners, the quantizers and the
CLI all read what they need from here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..discovery import module_importer
from ..errors import EdgevitError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..recipe import Recipe
    from ..runtime.base import Runner
    from .base import ExportedArtifact


class Target:
    """One deployment target: what it writes, the deploy form it wants, how it quantizes, runs and audits.

    Subclasses set the class attributes and implement :meth:`export`; the other methods have defaults that
    fit a target without a quantizer of its own or a host runner.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]  # the artifact's file suffix, with the dot
    description: ClassVar[str]  # one line for `edgevit recipes` and --help
    order: ClassVar[int] = 100  # place in listings and in `--target all` (lower first)
    # the deploy form ``lower()`` builds for this target (see ``edgevit.lowering.layout``)
    layout: ClassVar[str] = "tokens-last"
    default_recipe: ClassVar[str]
    int8_recipe: ClassVar[str | None] = None  # the static int8 recipe QAT uses unless told otherwise
    runtime: ClassVar[str]  # the host runtime's name in bench records
    host_runner: ClassVar[str | None] = None  # "module:Class" of its edgevit.runtime runner
    device_runner: ClassVar[str | None] = None  # the Android binary that times it (bench --device android)
    # int8: PT2E folds weights into int8 constants unless the converter reads float weights behind Q/DQ pairs
    fold_quantize: ClassVar[bool] = True
    float_ops: ClassVar[tuple] = ()  # aten ops kept float in this target's int8 graphs
    dynamic_float_modules: ClassVar[tuple[type, ...]] = ()  # module types kept float by dynamic int8
    # the artifact can take an RGB image with the normalisation inside, and name its classes (--image-input,
    # --labels: Core ML's ImageType and classifier outputs); other targets take the normalised tensor
    app_image_io: ClassVar[bool] = False
    # the keys a recipe's ``options`` may hold for this target, beside ``quantization`` and ``lowering``
    recipe_options: ClassVar[frozenset[str]] = frozenset()

    def export(self, model: nn.Module, example: torch.Tensor, recipe: Recipe) -> ExportedArtifact:
        raise NotImplementedError

    def audit_file(self, path: Path) -> dict[str, Any]:
        """The audit of a bare artifact on disk (no manifest)."""
        raise EdgevitError(f"no bare-file audit for {self.suffix} yet; export it with edgevit to get a manifest")

    def quantizer(self, options: dict[str, Any], qat: bool = False) -> Any:
        """The target's own PT2E quantizer for a recipe's ``quantization`` options (``qat``: fake-quantize)."""
        raise EdgevitError(f"target '{self.name}' has no PT2E quantizer; its int8 recipes quantize another way")

    def quantize_exported(self, options: dict[str, Any]) -> Any | None:
        """For a target that quantizes the exported file instead of the graph (ONNX's QDQ): a function
        ``(artifact, calibration, keep_float, step) -> artifact``; None for the PT2E path."""
        return None

    def adapt_for_dynamic(self, deploy: nn.Module) -> None:
        """Rewrite what this target's dynamic int8 path cannot take (in place, on a copy of the deploy form)."""

    def validate_quantization(self, recipe_name: str, options: dict[str, Any]) -> None:
        """Raise EdgevitError for quantization options this target cannot honour."""

    def cannot_run_here(self, path: Path) -> str | None:
        """Why this host cannot run the artifact, or None when it can."""
        return None

    def runner_class(self) -> type[Runner]:
        if self.host_runner is None:
            raise EdgevitError(f"no host runner for {self.suffix} files")
        module, _, cls = self.host_runner.partition(":")
        return getattr(importlib.import_module(module), cls)


_TARGETS: dict[str, Target] = {}
# each target's module registers it; helper modules with heavy imports (the XNNPACK passes) are private
_discover = module_importer(__package__)


def register_target(target: Target) -> Target:
    """Add a target (called at the foot of its module)."""
    _TARGETS[target.name] = target
    return target


def list_targets() -> list[Target]:
    """Every registered target, in their listing order."""
    _discover()
    return sorted(_TARGETS.values(), key=lambda t: (t.order, t.name))


def target_names() -> tuple[str, ...]:
    return tuple(t.name for t in list_targets())


def get_target(name: str) -> Target:
    _discover()
    try:
        return _TARGETS[name]
    except KeyError:
        raise EdgevitError(f"unknown target '{name}'; choose one of: {', '.join(target_names())}") from None


def target_for_path(path: str | Path) -> Target:
    """The target whose artifacts end like ``path``."""
    suffix = Path(path).suffix
    for target in list_targets():
        if target.suffix == suffix:
            return target
    known = ", ".join(t.suffix for t in list_targets())
    raise EdgevitError(f"{path} is not an artifact edgevit knows; expected one of {known}")
