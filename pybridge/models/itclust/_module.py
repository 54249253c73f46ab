"""ItClust networks (tensors only): stacked autoencoder and Student-t clustering head."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def default_hidden_dims(n_source_cells: int) -> tuple[int, ...]:
    """Hidden layer sizes (the last one is the bottleneck) chosen by source size.

    The paper sizes the network by the number of source cells; the table is the
    reference implementation's (the paper's supplementary Table 2 is not
    available to us).
    """
    n = int(n_source_cells)
    if n > 20000:
        return (128, 32)
    if n > 10000:
        return (64, 32)
    if n > 5000:
        return (32, 16)
    if n > 2000:
        return (128,)
    if n > 500:
        return (64,)
    return (16,)


def _activation(name: str):
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    if name == "linear":
        return lambda x: x
    raise ValueError(f"Unknown activation {name!r}: use 'relu', 'tanh' or 'linear'.")


def _glorot(layer: nn.Linear) -> nn.Linear:
    # Keras' default (glorot_uniform kernels, zero biases), as in the reference code
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class Encoder(nn.Module):
    """Dense layers ``dims[0] -> ... -> dims[-1]``; ReLU inside, tanh at the bottleneck."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = list(dims)
        self.layers = nn.ModuleList(_glorot(nn.Linear(a, b)) for a, b in zip(dims[:-1], dims[1:]))

    def activation(self, i: int) -> str:
        return "tanh" if i == len(self.layers) - 1 else "relu"

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Output of the encoder, or of its first ``upto`` layers."""
        n = len(self.layers) if upto is None else upto
        for i in range(n):
            x = _activation(self.activation(i))(self.layers[i](x))
        return x


class StackedAutoencoder(nn.Module):
    """Encoder plus a mirrored decoder, used only for pretraining.

    ``decoder.layers[i]`` maps ``dims[i + 1] -> dims[i]``; its activation is
    ReLU except for the output layer (``i == 0``), which is ``output_activation``
    (tanh in the paper).
    """

    def __init__(self, dims: list[int], output_activation: str = "tanh"):
        super().__init__()
        self.encoder = Encoder(dims)
        self.decoder_layers = nn.ModuleList(_glorot(nn.Linear(b, a)) for a, b in zip(dims[:-1], dims[1:]))
        self.output_activation = output_activation
        _activation(output_activation)  # validate early

    def decoder_activation(self, i: int) -> str:
        return self.output_activation if i == 0 else "relu"

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        for i in reversed(range(len(self.decoder_layers))):
            z = _activation(self.decoder_activation(i))(self.decoder_layers[i](z))
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encoder(x))

    def stack(self, i: int, h: torch.Tensor, dropout: float) -> torch.Tensor:
        """Denoising autoencoder of layer ``i`` alone (greedy pretraining).

        Dropout corrupts the input and the hidden code (the reference code's
        corruption); the layer pair is the same one the full autoencoder uses.
        """
        h = F.dropout(h, dropout, self.training)
        h = _activation(self.encoder.activation(i))(self.encoder.layers[i](h))
        h = F.dropout(h, dropout, self.training)
        return _activation(self.decoder_activation(i))(self.decoder_layers[i](h))

    def stack_parameters(self, i: int):
        return list(self.encoder.layers[i].parameters()) + list(self.decoder_layers[i].parameters())


class StudentTClustering(nn.Module):
    """Soft assignment q_ij of embedded cells to centroids with a Student-t kernel (DEC)."""

    def __init__(self, n_clusters: int, dim: int, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)
        self.centroids = nn.Parameter(torch.zeros(n_clusters, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d2 = ((z.unsqueeze(1) - self.centroids.unsqueeze(0)) ** 2).sum(dim=2)
        kernel = (1.0 + d2 / self.alpha).pow(-(self.alpha + 1.0) / 2.0)
        return kernel / kernel.sum(dim=1, keepdim=True)


class ItClustNet(nn.Module):
    """Encoder followed by the clustering layer; ``forward`` returns soft assignments."""

    def __init__(self, dims: list[int], n_clusters: int, alpha: float = 1.0):
        super().__init__()
        self.encoder = Encoder(dims)
        self.head = StudentTClustering(n_clusters, dims[-1], alpha)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def kld(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Mean over cells of KL(p_i || q_i), both clipped to [eps, 1] (as Keras' ``kld``)."""
    p = p.clamp(eps, 1.0)
    q = q.clamp(eps, 1.0)
    return (p * (p.log() - q.log())).sum(dim=1).mean()


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """DEC's auxiliary distribution: p_ij ∝ q_ij^2 / f_j with cluster frequencies f_j = Σ_i q_ij."""
    w = q.pow(2) / q.sum(dim=0, keepdim=True).clamp_min(1e-12)
    return w / w.sum(dim=1, keepdim=True)
