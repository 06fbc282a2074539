"""How close an artifact's outputs are to the PyTorch fp32 reference."""

from __future__ import annotations

import math

import numpy as np


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Max abs diff, SQNR (dB), mean and min cosine similarity and top-1 agreement over a batch of logits."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    out = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shapes differ: {ref.shape} vs {out.shape}")
    err = ref - out
    noise = float(np.sum(err**2))
    signal = float(np.sum(ref**2))
    sqnr = math.inf if noise == 0 else 10.0 * math.log10(signal / noise)
    cos = np.sum(ref * out, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1) + 1e-30)
    return {
        "max_abs_diff": float(np.max(np.abs(err))),
        "sqnr_db": round(sqnr, 2) if math.isfinite(sqnr) else 999.0,
        "cosine_mean": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
        "top1_agreement": float(np.mean(ref.argmax(1) == out.argmax(1))),
        "samples": int(len(ref)),
    }
