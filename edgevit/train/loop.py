"""A plain supervised loop (AdamW, cross-entropy, shuffled mini-batches) shared by fp32 training and QAT."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def train_epoch(
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    generator: torch.Generator,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """One pass over the data in a shuffled order; returns the mean loss."""
    order = torch.randperm(len(images), generator=generator)
    total, steps = 0.0, (len(images) + batch - 1) // batch
    for step in range(steps):
        idx = order[step * batch : (step + 1) * batch]
        loss = F.cross_entropy(forward(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
        if progress:
            progress(step + 1, steps)
    return total / len(images)


@torch.no_grad()
def accuracy(
    forward: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor, batch: int = 64
) -> float:
    correct = 0
    for start in range(0, len(images), batch):
        correct += int((forward(images[start : start + batch]).argmax(-1) == labels[start : start + batch]).sum())
    return correct / len(images)
