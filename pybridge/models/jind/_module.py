"""JIND's networks (encoder, classifier, generator for the alignment, discriminator) and a freeze helper."""

from __future__ import annotations

import torch
import torch.nn as nn


# ---------------------------------------------------------------------------- modules
class JINDEncoder(nn.Module):
    """F: ``Linear(genes -> n_latent)`` with dropout; returns the latent code (no ReLU)."""

    def __init__(self, n_genes: int, n_latent: int = 256, dropout: float = 0.2, input_noise: float = 0.0):
        super().__init__()
        self.linear = nn.Linear(n_genes, n_latent)
        self.dropout = nn.Dropout(dropout)
        self.input_noise = float(input_noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.input_noise > 0:
            x = x + torch.randn_like(x) * self.input_noise * x.detach()
        return self.dropout(self.linear(x))


class JINDClassifier(nn.Module):
    """P: ``ReLU -> Linear(n_latent, n_hidden) -> ReLU -> Linear(n_hidden, K)``; returns logits."""

    def __init__(self, n_latent: int, n_classes: int, n_hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.ReLU(), nn.Linear(n_latent, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def _mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out)
    )


class JINDGenerator(nn.Module):
    """G: ``h_hat = (1 + s(x)) * F(x) + b(x)`` for a query profile ``x`` and encoder F.

    ``forward(x, encoder)`` returns ``(h_hat, s(x))``; ``s(x) = S(x) - 1`` feeds the
    penalty. With ``identity_init`` the last layers of s and b start at zero, so
    G is exactly the identity before training. ``input_shift`` adds the
    reference code's learnable shift of ``x`` (used for F, s and b alike).
    """

    def __init__(
        self,
        n_genes: int,
        n_latent: int = 256,
        n_hidden: int = 512,
        identity_init: bool = True,
        input_shift: bool = False,
    ):
        super().__init__()
        self.scale = _mlp(n_genes, n_hidden, n_latent)
        self.shift = _mlp(n_genes, n_hidden, n_latent)
        self.input_bias = nn.Parameter(torch.zeros(n_genes)) if input_shift else None
        if identity_init:
            for net in (self.scale, self.shift):
                nn.init.zeros_(net[-1].weight)
                nn.init.zeros_(net[-1].bias)

    def forward(self, x: torch.Tensor, encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_bias is not None:
            x = x + self.input_bias
        s = self.scale(x)
        return (1.0 + s) * encoder(x) + self.shift(x), s


class JINDDiscriminator(nn.Module):
    """D on latent codes; returns a logit (sigmoid gives P(reference))."""

    def __init__(self, n_latent: int = 256, n_hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_latent, n_hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(n_hidden, n_latent),
            nn.LeakyReLU(0.2),
            nn.Linear(n_latent, n_latent),
            nn.LeakyReLU(0.2),
            nn.Linear(n_latent, 1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(-1)


class _Frozen:
    """Context: modules in eval mode with ``requires_grad`` off; restores both on exit."""

    def __init__(self, *modules: nn.Module):
        self.modules = [m for m in modules if m is not None]

    def __enter__(self):
        self._state = [(m.training, [p.requires_grad for p in m.parameters()]) for m in self.modules]
        for m in self.modules:
            m.eval()
            m.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for m, (training, flags) in zip(self.modules, self._state):
            m.train(training)
            for p, f in zip(m.parameters(), flags):
                p.requires_grad_(f)
