"""The weights every benchmark computes: the seeded init with every parameter the init leaves constant (LayerNorm
gammas of one, zero biases, zero tokens) moved off that constant, as training moves them, saved as a checkpoint.

At init a norm's affine is the identity, and LiteRT's converter drops a multiply by ones and an add of zeros: the
.tflite would then run ops fewer than the one a trained checkpoint gives, and a comparison would favour it for a
reason no shipped model has.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
SEED = 0


def weights_path(model: str) -> Path:
    return OUT / f"{model}-bench-weights.pth"


def write_bench_weights(model: str) -> Path:
    """Write the bench checkpoint of ``model`` (the same bytes every time) and return its path."""
    import torch

    from edgevit.models import create_model

    torch.manual_seed(SEED)
    net = create_model(model).eval()
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for p in net.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
    path = weights_path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def model_with_bench_weights(model: str):
    """The training form with the bench checkpoint's weights (written by :func:`write_bench_weights`)."""
    import torch

    from edgevit.models import create_model

    net = create_model(model).eval()
    net.load_state_dict(torch.load(weights_path(model), weights_only=True))
    return net
