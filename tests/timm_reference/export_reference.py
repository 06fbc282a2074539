"""Run timm's own model code (installed by ``make install`` into ``.venv/timm-reference``, outside the venv's
path) and write what edgevit must reproduce: checkpoints as timm saves them and their logits on given images.

    python export_reference.py IMAGES.npy OUT_DIR VARIANT[:CLASSES][:original] ...

Each VARIANT gets a folder OUT_DIR/VARIANT with ``checkpoint.safetensors`` (or, with ``:original``, a
``checkpoint.pth`` under the official repository's names: CrossViT's ``cls_token.0``, MViTv2's flat
``blocks.N`` under ``model_state``) and ``logits.npy``. ``:CLASSES``
builds it with another classifier, as a fine-tuned checkpoint has. Every parameter is perturbed from timm's
init (LayerNorm weights away from 1, zero biases away from 0), so a weight loaded into the wrong place cannot
go unnoticed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torchvision_stand_in  # noqa: F401  (timm imports torchvision names at module level)

# isort: split
import timm

ORIGINAL_NAMES = ("cls_token_", "pos_embed_")  # timm's names for CrossViT's official ParameterList entries


def crossvit_original(state: dict) -> dict:
    original = {}
    for key, value in state.items():
        for name in ORIGINAL_NAMES:
            if key.startswith(name):
                key = name[:-1] + "." + key[len(name) :]
        original[key] = value
    return original


def mvitv2_original(state: dict, model) -> dict:
    """facebookresearch/mvit's names: blocks numbered across stages, ``blocks.N.proj`` the shortcut."""
    first = [sum(model.depths[:s]) for s in range(len(model.depths))]
    original = {}
    for key, value in state.items():
        if key.startswith("stages."):
            _, s, _, b, rest = key.split(".", 4)
            key = f"blocks.{first[int(s)] + int(b)}." + rest.replace("shortcut_proj_attn.", "proj.")
        original[key.replace("head.fc.", "head.projection.")] = value
    return {"model_state": original}


def write_reference(spec: str, images: torch.Tensor, out: Path) -> None:
    variant, *options = spec.split(":")
    classes = [int(o) for o in options if o.isdigit()]
    torch.manual_seed(0)
    model = timm.create_model(variant, **({"num_classes": classes[0]} if classes else {})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        logits = model(images)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = out / variant
    folder.mkdir(parents=True, exist_ok=True)
    if "original" in options:
        original = mvitv2_original(state, model) if variant.startswith("mvitv2") else crossvit_original(state)
        torch.save(original, folder / "checkpoint.pth")
    else:
        from safetensors.torch import save_file

        save_file(state, str(folder / "checkpoint.safetensors"))
    np.save(folder / "logits.npy", logits.numpy())
    print(f"{spec}: timm {timm.__version__}, {sum(p.numel() for p in model.parameters())} parameters")


def main() -> None:
    images, out, *specs = sys.argv[1:]
    batch = torch.from_numpy(np.load(images))
    for spec in specs:
        write_reference(spec, batch, Path(out))


if __name__ == "__main__":
    main()
