"""Real images for numerics and calibration: the photos scikit-image ships, or a user's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import EdgevitError
from .models.registry import InputSpec, Size, size_hw

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# colour photographs bundled inside the scikit-image wheel (no download needed)
SAMPLE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
)


def sample_photo_paths() -> list[Path]:
    """Paths of the colour photos scikit-image ships in ``skimage/data``."""
    import skimage.data

    root = Path(skimage.data.__file__).parent
    paths = [root / name for name in SAMPLE_PHOTOS if (root / name).is_file()]
    if not paths:
        raise EdgevitError("scikit-image's sample photos are missing; reinstall with `make install`")
    return paths


def image_paths(folder: str | Path | None) -> list[Path]:
    """Every JPEG/PNG under ``folder`` (recursive, sorted), or the sample photos when ``folder`` is None."""
    if folder is None:
        return sample_photo_paths()
    root = Path(folder)
    if not root.is_dir():
        raise EdgevitError(f"image folder not found: {root}; pass a directory of JPEG or PNG files")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise EdgevitError(f"no images in {root}: expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    return paths


def preprocess(path: Path, spec: InputSpec, size: Size) -> torch.Tensor:
    """Resize to cover ``size`` / crop_pct, centre-crop ``size``, scale to [0, 1], normalise: (1, C, H, W).

    For a square size this is the usual short-side resize; an (H, W) size scales the image just enough to
    cover both sides, so nothing is stretched.
    """
    h, w = size_hw(size)
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if spec.channels == 3 else "L")
            width, height = img.size
            scale = max(round(h / spec.crop_pct) / height, round(w / spec.crop_pct) / width)
            img = img.resize((max(w, round(width * scale)), max(h, round(height * scale))), Image.BICUBIC)
            width, height = img.size
            left, top = (width - w) // 2, (height - h) // 2
            img = img.crop((left, top, left + w, top + h))
            arr = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise EdgevitError(
            f"cannot read image {path} ({e.__class__.__name__}); remove it or convert it to PNG"
        ) from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = (arr - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).unsqueeze(0)


def load_images(folder: str | Path | None, spec: InputSpec, size: Size, limit: int | None = None) -> torch.Tensor:
    """A batch (N, C, H, W) of preprocessed real images."""
    paths = image_paths(folder)[:limit]
    return torch.cat([preprocess(p, spec, size) for p in paths])
