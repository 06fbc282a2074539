"""Model registry: names -> builders with their default input spec; ``create_model`` loads checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from torch import nn

from ..discovery import module_importer
from ..errors import EdgevitError
from .checkpoint import load_checkpoint, read_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


Size = int | tuple[int, int]  # square side, or (height, width)


def size_hw(size: Size) -> tuple[int, int]:
    """(height, width) of a square side or an (H, W) pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def size_text(size: Size) -> str:
    """'224' or '128x512', the form ``--input-size`` takes."""
    h, w = size_hw(size)
    return str(h) if h == w else f"{h}x{w}"


def parse_size(text: str) -> Size:
    """'224' -> 224, '128x512' -> (128, 512); anything else is a one-line error."""
    parts = text.lower().replace(" ", "").split("x")
    if not (1 <= len(parts) <= 2 and all(p.isdigit() for p in parts)):
        raise EdgevitError(f"input size '{text}' is not a size: use one number (224) or HEIGHTxWIDTH (128x512)")
    if len(parts) == 1 or parts[0] == parts[1]:
        return int(parts[0])
    return int(parts[0]), int(parts[1])


@dataclass(frozen=True)
class InputSpec:
    """What the model expects: size, layout and normalisation of one image batch (or 1-channel map)."""

    size: Size = 224
    channels: int = 3
    size_multiple: int = 32
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.96
    interpolation: str = "bicubic"
    layout: str = "NCHW"
    channel_order: str = "RGB"
    dtype: str = "float32"
    # "image", or "spectrogram": a 1-channel log-mel map (mel bins x frames) the app computes itself
    kind: str = "image"

    def shape(self, size: Size | None = None, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.channels, *size_hw(size or self.size))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_spec: InputSpec = field(default_factory=InputSpec)
    description: str = ""
    filter_fn: Callable | None = None
    # the builder takes ``img_size``: position embeddings are learned for one input grid
    sized: bool = False
    # a tiny random-init variant for tests and plumbing checks: buildable by name, left out of listings
    test: bool = False
    # measured by `make bench` and `make accuracy` and listed in the results tables
    benchmark: bool = False
    # the classifier Linear whose rows count a fine-tuned checkpoint's classes (the first of several heads);
    # several names where checkpoints name it differently (the official code's and timm's)
    classifier: str | tuple[str, ...] = "head"


_REGISTRY: dict[str, ModelEntry] = {}
_discover = module_importer(__package__)  # each family's module registers its variants


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add a model variant (called at the foot of its family's module)."""
    _REGISTRY[entry.name] = entry
    return entry


def _build_from_config(
    model_class: type, config, num_classes: int | None = None, features_only: bool = False, img_size=None
) -> nn.Module:
    config = replace(config, img_size=img_size or config.img_size)
    if num_classes is not None:
        config = replace(config, num_classes=num_classes)
    return model_class(config, features_only=features_only)


def register_config(
    model_class: type, configs: dict, name: str, description: str, spec: InputSpec, **fields
) -> ModelEntry:
    """Register variant ``name`` built as ``model_class(configs[name])``: a frozen config dataclass with
    ``img_size`` and ``num_classes`` fields, learned for one input size (``sized``). ``fields`` are the entry's
    others (``filter_fn``, ``classifier``, ``benchmark``, ``test``). A family binds its class, configs and
    defaults once: ``_register = partial(register_config, MyModel, MY_CONFIGS, spec=MY_SPEC, filter_fn=...)``."""
    builder = partial(_build_from_config, model_class, configs[name])
    return register_model(ModelEntry(name, builder, input_spec=spec, description=description, sized=True, **fields))


def list_models(include_test: bool = False) -> list[str]:
    """Names of every registered model, sorted; the tiny test variants only with ``include_test``."""
    _discover()
    return sorted(name for name, entry in _REGISTRY.items() if include_test or not entry.test)


def benchmarked_models() -> list[str]:
    """The models `make bench` and `make accuracy` measure, in registration order (a family's own order)."""
    _discover()
    return [name for name, entry in _REGISTRY.items() if entry.benchmark]


def get_entry(name: str) -> ModelEntry:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EdgevitError(
            f"unknown model '{name}'; choose one of: {', '.join(list_models())} (see `edgevit models`)"
        ) from None


def check_input_size(name: str, size: Size) -> None:
    spec = get_entry(name).input_spec
    if any(n <= 0 or n % spec.size_multiple for n in size_hw(size)):
        raise EdgevitError(
            f"input size {size_text(size)} does not suit {name}: use a positive multiple of {spec.size_multiple} "
            f"for each side (e.g. {size_text(spec.size)})"
        )


def create_model(name: str, checkpoint: str | Path | None = None, input_size: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model in its training form, optionally loading a checkpoint (strict keys).

    A fine-tuned checkpoint sets the number of classes from its classifier (``ModelEntry.classifier``). ``input_size``
    builds a model whose position embeddings are learned for that size (a checkpoint's are resized to it); other
    models run at any size and ignore it.
    """
    entry = get_entry(name)
    if entry.sized:
        kwargs["img_size"] = size_hw(input_size or entry.input_spec.size)
    if checkpoint is None:
        return entry.builder(**kwargs)
    state = read_state_dict(checkpoint)
    names = (entry.classifier,) if isinstance(entry.classifier, str) else entry.classifier
    head = next((state[f"{n}.weight"] for n in names if f"{n}.weight" in state), None)
    if head is not None and head.dim() == 2 and "num_classes" not in kwargs and not kwargs.get("features_only"):
        kwargs["num_classes"] = head.shape[0]
    model = entry.builder(**kwargs)
    load_checkpoint(model, checkpoint, entry.filter_fn, state)
    return model
