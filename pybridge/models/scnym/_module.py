"""scNym's networks and loss pieces: tensors in, tensors out."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------- modules
class ScNymNet(nn.Module):
    """The classifier f_theta. ``forward`` returns logits; ``embed`` the penultimate activations."""

    def __init__(self, n_genes: int, n_classes: int, n_hidden: int = 256, n_layers: int = 3, dropout: float = 0.5):
        super().__init__()
        blocks, d = [], n_genes
        for _ in range(n_layers):  # independent layers (the reference code shares weights when n_layers > 2)
            blocks.append(
                nn.Sequential(nn.Linear(d, n_hidden), nn.BatchNorm1d(n_hidden), nn.Dropout(dropout), nn.ReLU())
            )
            d = n_hidden
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(n_hidden, n_classes)

    def embed(self, x: torch.Tensor, pre_relu: bool = False) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            if pre_relu and i == len(self.blocks) - 1:
                return block[2](block[1](block[0](x)))
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``-weight`` backward."""
    return _GradReverse.apply(x, float(weight))


class DomainAdversary(nn.Module):
    def __init__(self, n_hidden: int, n_domains: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_hidden, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_domains))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


# ---------------------------------------------------------------------------- loss pieces
def ramp_weight(epoch: int, max_weight: float, ramp_epochs: int, shape: str) -> float:
    """Weight at integer ``epoch``: rises from ~0 to ``max_weight`` over ``ramp_epochs``."""
    if ramp_epochs <= 0 or epoch >= ramp_epochs:
        return float(max_weight)
    t = epoch / ramp_epochs
    if shape == "linear":
        return float(max_weight * t)
    return float(max_weight * np.exp(-5.0 * (1.0 - t) ** 2))


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        return F.one_hot(p.argmax(1), p.shape[1]).to(p.dtype)
    q = p ** (1.0 / temperature)
    return q / q.sum(dim=1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def mask_genes(x_log: torch.Tensor, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """Zero a random ``fraction`` of genes per cell in count space, then back to log(CPM + 1)."""
    if fraction <= 0:
        return x_log
    keep = (torch.rand(x_log.shape, generator=gen) >= fraction).to(x_log.device, x_log.dtype)
    counts = torch.expm1(x_log) * keep
    lib = counts.sum(dim=1, keepdim=True).clamp_min(1e-8)
    return torch.log1p(counts / lib * 1e6)
