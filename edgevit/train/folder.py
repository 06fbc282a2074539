"""A labelled image folder: one subfolder per class, JPEG/PNG inside (recursive), preprocessed like the model's
input. Small sets are loaded into memory once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import IMAGE_SUFFIXES, preprocess
from ..errors import EdgevitError
from ..models.registry import InputSpec, Size


@dataclass
class LabelledImages:
    classes: list[str]
    images: torch.Tensor  # (N, C, S, S), normalised
    labels: torch.Tensor  # (N,) class indices


def class_folders(root: str | Path, option: str = "--data") -> dict[str, list[Path]]:
    """Class name -> its image paths; a one-line error for a folder a user would get wrong (``option`` names
    the command-line option that gave it)."""
    root = Path(root)
    if not root.is_dir():
        raise EdgevitError(f"{option} folder not found: {root}; pass a folder with one subfolder of images per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise EdgevitError(
            f"{root} has {len(folders)} class subfolder(s); put each class's images in its own subfolder"
        )
    classes = {}
    for folder in folders:
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise EdgevitError(
                f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); add some or remove it"
            )
        classes[folder.name] = paths
    return classes


def load_labelled(
    root: str | Path,
    spec: InputSpec,
    size: Size,
    classes: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    option: str = "--data",
) -> LabelledImages:
    """Every image of ``root`` with its class index. ``classes`` (a training set's) fixes the order and must
    match the folder's class names, so a validation folder cannot silently renumber the labels."""
    found = class_folders(root, option)
    if classes is not None and sorted(found) != sorted(classes):
        raise EdgevitError(f"{root} has classes {sorted(found)}, the training data has {sorted(classes)}; use the same")
    order = classes or list(found)
    items = [(path, i) for i, name in enumerate(order) for path in found[name]]
    images = []
    for done, (path, _) in enumerate(items, 1):
        images.append(preprocess(path, spec, size))
        if progress:
            progress(done, len(items))
    return LabelledImages(order, torch.cat(images), torch.tensor([i for _, i in items]))
