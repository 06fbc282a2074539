"""scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes, shipped with the package) as an image
folder: upsampled to RGB PNGs, split into train/ and val/ with the class balance kept. Available offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import EdgevitError
from ..fileio import make_dir


def write_digits(out: str | Path, size: int = 64, val_fraction: float = 0.2, seed: int = 0) -> dict[str, int]:
    """Write ``out/train/<digit>/*.png`` and ``out/val/<digit>/*.png``; returns the image count per split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgevitError(f"{out} is a file; pass a new folder")
    if out.exists() and any(out.iterdir()):
        raise EdgevitError(f"{out} is not empty; pass a new folder")
    if not 0 < val_fraction < 1:
        raise EdgevitError(f"the held-out fraction must be between 0 and 1, got {val_fraction}")
    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).astype(np.uint8)  # scans are 0..16
    idx_train, idx_val = train_test_split(
        np.arange(len(pixels)), test_size=val_fraction, random_state=seed, stratify=digits.target
    )
    counts = {}
    for split, indices in (("train", idx_train), ("val", idx_val)):
        for i in indices:
            folder = out / split / str(digits.target[i])
            make_dir(folder)
            image = Image.fromarray(pixels[i], mode="L").resize((size, size), Image.BILINEAR).convert("RGB")
            image.save(folder / f"{i:04d}.png")
        counts[split] = len(indices)
    return counts
