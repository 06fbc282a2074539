"""Safe checkpoint loading: tensors only (weights_only / safetensors), strict keys, clear errors."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import EdgevitError

# wrappers used by common training scripts (timm, DeiT, the official LVT code; PySlowFast and MViT: model_state)
_NESTED_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a bare state_dict or one nested under a common key from .pth/.pth.tar/.pt/.bin/.safetensors."""
    path = Path(path)
    if not path.is_file():
        raise EdgevitError(f"checkpoint not found: {path}; pass the path of a .pth or .safetensors file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise EdgevitError(f"checkpoint {path} is not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, KeyError):  # a file that is no pickle at all fails in the unpickler's opcode table
            first = "not a PyTorch checkpoint file"
        raise EdgevitError(
            f"checkpoint {path} cannot be loaded as tensors only ({first[:160]}); "
            "re-save it with torch.save(model.state_dict()) or as .safetensors"
        ) from None
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EdgevitError(
            f"checkpoint {path} holds no state_dict (expected tensors, bare or under one of {', '.join(_NESTED_KEYS)})"
        )
    # DataParallel / DDP prefix
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_checkpoint(
    model: nn.Module,
    path: str | Path,
    filter_fn: Callable[[dict, nn.Module], dict] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Load weights with strict key and shape checks; a mismatch names the keys at fault.

    ``state`` is the already-read content of ``path``, when the caller has it.
    """
    state = read_state_dict(path) if state is None else state
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_preview(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_preview(unexpected)})")
        raise EdgevitError(
            f"checkpoint {path} does not match this model: keys {'; '.join(parts)}; "
            "check that the checkpoint belongs to this model name"
        )
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise EdgevitError(
            f"checkpoint {path} does not match this model: {len(wrong)} tensors differ in shape, e.g. {k} "
            f"{tuple(state[k].shape)} vs {tuple(own[k].shape)} (another variant or number of classes?)"
        )
    model.load_state_dict(state, strict=True)


def _preview(keys: list[str], n: int = 4) -> str:
    more = f", ... +{len(keys) - n}" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
