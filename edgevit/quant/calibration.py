"""Calibration images: a user's folder (any JPEG/PNG, recursive) or photos scikit-image ships, preprocessed
exactly like the model's input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ..data import image_paths, preprocess
from ..errors import EdgevitError
from ..models.registry import InputSpec

# scikit-image's other photos and textures: calibration never sees the eight photos numerics are checked on
CALIBRATION_PHOTOS = (
    "motorcycle_right.png",
    "color.png",
    "chessboard_RGB.png",
    "logo.png",
    "horse.png",
    "camera.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "brick.png",
    "page.png",
    "moon.png",
    "text.png",
    "cell.png",
    "microaneurysms.png",
    "clock_motion.png",
)
MIN_SIDE = 32  # smaller images carry no texture worth calibrating on once upscaled


def calibration_paths(folder: str | Path | None) -> list[Path]:
    if folder is not None:
        return image_paths(folder)
    import skimage.data

    root = Path(skimage.data.__file__).parent
    paths = [root / name for name in CALIBRATION_PHOTOS if (root / name).is_file()]
    if not paths:
        raise EdgevitError("scikit-image's sample photos are missing; reinstall with `make install`")
    return paths


def _check_size(path: Path) -> None:
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError) as e:
        raise EdgevitError(
            f"cannot read calibration image {path} ({e.__class__.__name__}); remove or convert it"
        ) from None
    if min(w, h) < MIN_SIDE:
        raise EdgevitError(
            f"calibration image {path} is {w}x{h}; use images at least {MIN_SIDE} px on the short side or remove it"
        )


def checked_calibration_paths(folder: str | Path | None, count: int) -> list[Path]:
    """The first ``count`` calibration images, each opened and size-checked (before any model work starts)."""
    if count < 1:
        raise EdgevitError(f"--calib-count must be at least 1, got {count}")
    paths = calibration_paths(folder)[:count]
    for path in paths:
        _check_size(path)
    return paths


def calibration_batch(
    paths: list[Path],
    spec: InputSpec,
    size: int,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The images at ``paths`` (from :func:`checked_calibration_paths`) preprocessed, (N, C, S, S)."""
    batch = []
    for i, path in enumerate(paths):
        batch.append(preprocess(path, spec, size))
        if progress:
            progress(i + 1, len(paths))
    return torch.cat(batch)
