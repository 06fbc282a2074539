"""Model registry: names -> builders with their default input spec; ``create_model`` loads checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..errors import EdgevitError
from .checkpoint import load_checkpoint, read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: size, layout and normalisation of one image batch."""

    size: int = 224
    channels: int = 3
    size_multiple: int = 32
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.96
    interpolation: str = "bicubic"
    layout: str = "NCHW"
    channel_order: str = "RGB"
    dtype: str = "float32"

    def shape(self, size: int | None = None, batch: int = 1) -> tuple[int, int, int, int]:
        s = size or self.size
        return (batch, self.channels, s, s)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_spec: InputSpec = field(default_factory=InputSpec)
    description: str = ""
    filter_fn: Callable | None = None
    # the builder takes ``img_size``: position embeddings are learned for one input grid
    sized: bool = False


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    _REGISTRY[entry.name] = entry
    return entry


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EdgevitError(
            f"unknown model '{name}'; choose one of: {', '.join(list_models())} (see `edgevit models`)"
        ) from None


def check_input_size(name: str, size: int) -> None:
    spec = get_entry(name).input_spec
    if size <= 0 or size % spec.size_multiple:
        raise EdgevitError(
            f"input size {size} does not suit {name}: use a positive multiple of {spec.size_multiple} "
            f"(e.g. {spec.size})"
        )


def create_model(name: str, checkpoint: str | Path | None = None, input_size: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model in its training form, optionally loading a checkpoint (strict keys).

    A fine-tuned checkpoint sets the number of classes from its classifier (``head.weight``). ``input_size``
    builds a model with position embeddings is built for that size (a checkpoint's are resized to it); other
    models run at any size and ignore it.
    """
    entry = get_entry(name)
    if entry.sized:
        kwargs["img_size"] = input_size or entry.input_spec.size
    if checkpoint is None:
        return entry.builder(**kwargs)
    state = read_state_dict(checkpoint)
    head = state.get("head.weight")
    if head is not None and head.dim() == 2 and "num_classes" not in kwargs and not kwargs.get("features_only"):
        kwargs["num_classes"] = head.shape[0]
    model = entry.builder(**kwargs)
    load_checkpoint(model, checkpoint, entry.filter_fn, state)
    return model
