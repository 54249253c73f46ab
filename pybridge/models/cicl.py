"""CICL: cluster-aware iterative contrastive learning for clustering (Jiang, Wang, Guan & Zhou).

Pipeline (paper, Fig. 1 and Algorithm 1):

1. Preprocessing as in scDeepCluster: divide each cell by its size factor
   (library size / median library size), natural ``log1p``, keep the top
   ``n_top_genes`` = 500 genes by *normalized dispersion* (Seurat-style bins
   of mean expression), z-score each gene, clipped to [-10, 10] (``max_value``;
   an addition, see below). The z-scoring is applied per minibatch on the
   device, so the matrix stays sparse.
2. Per minibatch: two views of each cell with additive Gaussian noise.
3. A shared Transformer encoder (4 post-LayerNorm layers, model width = number
   of genes, 2 heads of 512, feed-forward 1024) maps the clean view and the
   two noisy views to H, H1, H2 (H has one value per gene, i.e. 500 dims).
4. Pseudo-labels: K-means on H gives centroids C (per minibatch in the paper,
   once before training by default here, see ``pseudo_labels``); the Student-t
   kernel (alpha = 1) gives soft assignments q and the label ``argmax q``.
5. A projection head (G -> 1024 -> 512, ReLU) maps H1, H2 to Z1, Z2 (L2-normalised).
6. Loss = instance loss (NT-Xent, T = 0.5) + lambda (0.1) x cluster-aware loss; Adam.
7. After training, K-means on the clean-view embedding of all cells gives the
   clusters; the Student-t soft assignment to those centroids is the
   per-cell confidence (``max_j q_ij``) and the probability matrix.

Choices where the paper and its reference code differ (each is an option of
:class:`CICLConfig`). The defaults were compared on dev sets with labels used
only to score finished runs, never during training or for picking an epoch;
the numbers are in ``benchmarks/results_cicl.md``:

* ``attention``: read literally, the paper's attention equations mix the cells
  of a minibatch (each cell a token of G values): ``"batch"``. The reference
  code feeds each cell as a sequence of length one, where the softmax over a
  single key is 1 and the block reduces to a residual MLP: ``"cell"``
  (default; an embedding then depends only on the cell itself, not on which
  other cells share its minibatch). With ``"cell"`` the query/key projections
  are not built, since they cannot change the output.
* ``pseudo_labels``: K-means on each minibatch's embedding (paper, Algorithm 1:
  ``"batch"``) or once, on the untrained encoder's embedding of all cells, with
  the centroids then fixed and every cell re-assigned to the nearest one at each
  step (reference code: ``"once"``, default). In a 20-epoch comparison on three
  small dev sets (seed 0) ``"once"`` scored mean ARI 0.887 against 0.801 for
  ``"batch"``, which let the pseudo-labels jump between steps; it is also cheaper.
* ``instance_loss``: the paper's symmetric NT-Xent with 2B - 1 candidates per
  anchor (``"ntxent"``, default) or the code's one-directional InfoNCE with
  cross-view negatives only (``"infonce"``).
* ``cluster_loss``: the paper's Eq. 15 puts only other-cluster pairs in the
  denominator, which is unbounded below and undefined when a minibatch has a
  single pseudo-cluster. pybridge uses the safe form
  ``-log(sum_pos / (sum_pos + sum_neg))`` with the same positives as Eq. 15
  (own partner, and every same-pseudo-cluster cell in both views):
  ``"supcon"`` (default). ``"fne"`` is the code's variant: the own partner is
  the only positive and same-cluster cells are removed from the negatives,
  averaged per pseudo-cluster and summed over clusters.
* ``augmentation``: ``"paper"`` adds N(0, 1) noise mapped linearly (per cell)
  onto [0, 1]; ``"code"`` adds N(0, ``noise_std``^2) to a random
  ``noise_fraction`` of the genes of each cell. Both are drawn afresh for every
  minibatch (Algorithm 1 draws them inside the loop; the reference code draws
  the ``"code"`` noise once, which would need two dense cells x genes copies).
* Optimisation: the paper's Table 2 says 1000 epochs at lr 1e-5; the code runs
  51 epochs with lr 1e-4 for the encoder and 1e-5 for the projection head.
  Defaults here: see :class:`CICLConfig` (``n_epochs``, ``lr``, ``proj_lr``).
* ``max_value``: the paper z-scores without a bound. A gene detected in a few of
  N cells then reaches z of about sqrt(N) (about 32 for 1000 cells) and such
  genes dominate the distances; on baron_mouse2 K-means on the unclipped 500
  z-scored genes scored ARI 0.27 against 0.85 with scanpy's usual clip at 10,
  with the small sets unchanged. Default 10; ``None`` is the paper's form.
  (The K estimator works on the unclipped z-scores, where it was tuned.)
* The reference code keeps the epoch with the best *ground-truth* ARI. pybridge
  never looks at labels: the final epoch's encoder is used.
* The clean view is encoded in eval mode without gradient (no dropout) to
  compute pseudo-labels; the code runs it in train mode.
* ``norm``: where the encoder's per-cell LayerNorm sits (see :class:`EncoderLayer`).
  ``"post"`` (paper Eq. 5 and 7, default): every block ends in a LayerNorm,
  so the embedding keeps nothing of a cell's overall scale across genes.
  ``"pre"`` normalises only the input of each sublayer and leaves the residual
  stream (and the output) at the input's scale; ``"none"`` drops LayerNorm.
  The paper's form stays the default because it had the highest mean ARI
  over the six dev sets where all three were measured (20 epochs, true K,
  seed 0: post 0.596, pre 0.582, none 0.537; with a second seed where one
  was run the order holds; benchmarks/results_cicl.md). The differences are
  within seed noise on the small sets. ``"none"`` is the one that rescues
  baron_mouse2 (ARI 0.84-0.85 against 0.27-0.28, both seeds) but it loses yan
  (0.11 / 0.45) and pollen; ``"pre"`` does not rescue baron (0.25): its
  sublayers add scale-free terms, computed from LN(x), to the residual stream.

Known limitation: with the default post-LN encoder, a set dominated by one
type with many rare ones (baron_mouse2) clusters far worse than PCA of the
same input (K-means on LayerNorm(z) alone, no network, already drops from
ARI 0.85 to 0.35); ``norm="none"`` avoids that but is less stable on small sets.

Number of clusters: the paper uses the true number of cell types. With
``n_clusters=None`` pybridge estimates K once, before training, on the top
``n_pcs`` = 10 principal components of the preprocessed (z-scored HVG) data;
see :func:`estimate_n_clusters`. Default ``k_estimator="eigengap"``: the
largest gap between consecutive eigenvalues of the normalised Laplacian of a
15-nearest-neighbour graph, K in ``[k_min, k_max]`` = [2, 20]. The alternative
``"silhouette"`` runs K-means for every K and keeps the best mean silhouette.
On the seven dev sets the eigengap on 10 PCs with 15 neighbours was off by the
smallest total log-ratio (both estimators are rough: see the benchmark table).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import _io
from .._io import join_states, split_state
from .._settings import logger, resolve_device, resolve_verbose
from ..data import (align_columns, densify, epoch_batches, gene_overlap, get_counts, iter_dense, normalize_total,
                    normalized_dispersion)
from ..result import ClusteringResult
from ..train import History, Timer, make_rng, progress, seed_everything
from ._base import _version, make_config

NORMS = ("post", "pre", "none")
_CHOICES = {
    "attention": ("cell", "batch"),
    "norm": NORMS,
    "pseudo_labels": ("batch", "once"),
    "instance_loss": ("ntxent", "infonce"),
    "cluster_loss": ("supcon", "fne"),
    "augmentation": ("paper", "code"),
    "k_estimator": ("silhouette", "eigengap"),
}


@dataclass(frozen=True)
class CICLConfig:
    """CICL hyperparameters. Paper values unless noted (see the module docstring)."""

    n_clusters: int | None = None  # None: estimated with ``k_estimator``
    # preprocessing
    n_top_genes: int = 500
    max_value: float | None = 10.0  # clip z-scores to [-10, 10]; None = no clipping (paper)
    # encoder (paper Table 2 / reference code)
    attention: str = "cell"
    norm: str = "post"  # LayerNorm placement: "post" (paper), "pre" or "none" (see EncoderLayer)
    n_layers: int = 4
    n_heads: int = 2
    head_dim: int = 512
    ffn_dim: int = 1024
    dropout: float = 0.2  # not in the paper; the code's value
    # projection head
    proj_hidden: int = 1024  # paper (code: 2048)
    proj_dim: int = 512
    # augmentation
    augmentation: str = "paper"
    noise_std: float = 0.5  # "code" augmentation
    noise_fraction: float = 0.8  # "code" augmentation
    # pseudo-labels and losses
    pseudo_labels: str = "once"  # code; paper: "batch"
    alpha: float = 1.0  # Student-t degrees of freedom
    temperature: float = 0.5
    lam: float = 0.1  # weight of the cluster-aware loss
    instance_loss: str = "ntxent"
    cluster_loss: str = "supcon"
    # optimisation
    lr: float = 1e-4  # encoder (code; paper 1e-5)
    proj_lr: float | None = None  # projection head; None = lr
    weight_decay: float = 0.0
    batch_size: int = 6000
    n_epochs: int = 50  # code: 51; paper Table 2: 1000
    # clustering
    kmeans_n_init: int = 10  # final K-means (and K estimation)
    kmeans_n_init_train: int = 3  # per-minibatch K-means during training
    kmeans_max_iter: int = 300
    # estimating K
    k_estimator: str = "eigengap"
    k_min: int = 2
    k_max: int = 20
    n_pcs: int = 10  # principal components the K estimator works on
    k_neighbors: int = 15  # neighbours of the "eigengap" graph

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {getattr(self, name)!r}.")
        if self.n_clusters is not None:
            if isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, (int, np.integer)):
                raise ValueError(f"n_clusters must be an integer >= 2 or None (estimate it), not {self.n_clusters!r}.")
            if self.n_clusters < 2:
                raise ValueError(f"n_clusters must be at least 2, not {self.n_clusters}.")
        positive = ("n_top_genes", "n_layers", "n_heads", "head_dim", "ffn_dim", "proj_hidden", "proj_dim",
                    "n_epochs", "kmeans_n_init", "kmeans_n_init_train", "kmeans_max_iter", "n_pcs", "k_neighbors")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, not {getattr(self, name)!r}.")
        if self.batch_size < 4:
            raise ValueError("batch_size must be at least 4 (contrastive losses need several cells per batch).")
        if self.max_value is not None and self.max_value <= 0:
            raise ValueError("max_value (z-score clipping) must be positive or None.")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1).")
        if not 0 < self.noise_fraction <= 1:
            raise ValueError("noise_fraction must be in (0, 1].")
        if self.temperature <= 0 or self.alpha <= 0:
            raise ValueError("temperature and alpha must be positive.")
        if self.lam < 0:
            raise ValueError("lam (the cluster-aware loss weight) must be >= 0.")
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"Need 2 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}.")


# ============================================================================ modules
class EncoderLayer(nn.Module):
    """Transformer layer on cells of width ``d`` (paper Eq. 3-7).

    ``attend_across_cells=False``: each cell is a sequence of one token, so the
    attention output is ``W_O W_V x`` (softmax over one key is 1).
    ``True``: the cells of the input tensor attend to each other.

    ``norm``: where the per-cell LayerNorm sits. ``"post"`` (paper):
    ``x = LN(x + Attn(x)); x = LN(x + FFN(x))``, so every layer's output has
    zero mean and unit variance across genes in each cell. ``"pre"``:
    ``x = x + Attn(LN(x)); x = x + FFN(LN(x))``, the sublayers see normalised
    input but the residual stream (and the output) keeps the input's scale.
    ``"none"``: ``x = x + Attn(x); x = x + FFN(x)``, no LayerNorm at all.
    """

    def __init__(self, d: int, n_heads: int, head_dim: int, ffn_dim: int, dropout: float,
                 attend_across_cells: bool, norm: str = "post"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}, not {norm!r}.")
        self.n_heads, self.head_dim, self.across, self.norm = n_heads, head_dim, attend_across_cells, norm
        inner = n_heads * head_dim
        self.value = nn.Linear(d, inner, bias=False)
        if attend_across_cells:
            self.query = nn.Linear(d, inner, bias=False)
            self.key = nn.Linear(d, inner, bias=False)
        self.out = nn.Linear(inner, d, bias=False)
        if norm != "none":
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d))
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        if not self.across:
            # One token per cell: the block is the linear map W_O W_V. Multiplying the two weights
            # first and applying the d x d product gives the same output and the same parameter
            # gradients (autograd passes dL/d(W_O W_V) on to both factors): n d^2 instead of
            # 2 n d m multiply-adds per pass for n cells, plus d^2 m for the product itself
            # (m = heads x head_dim), so it pays once n (2m - d) > d m (n > 331 at d = 500,
            # m = 1024; a quarter of the per-cell work on large sets).
            d, m = self.out.weight.shape
            if x.shape[0] * (2 * m - d) > d * m:
                return F.linear(x, self.out.weight @ self.value.weight)
            return self.out(self.value(x))
        v = self.value(x)
        n = x.shape[0]
        heads = lambda t: t.view(n, self.n_heads, self.head_dim).transpose(0, 1)  # noqa: E731
        ctx = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(v))
        return self.out(ctx.transpose(0, 1).reshape(n, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "post":
            x = self.norm1(x + self.drop1(self.attention(x)))
            return self.norm2(x + self.drop2(self.ffn(x)))
        if self.norm == "pre":
            x = x + self.drop1(self.attention(self.norm1(x)))
            return x + self.drop2(self.ffn(self.norm2(x)))
        x = x + self.drop1(self.attention(x))
        return x + self.drop2(self.ffn(x))


class CICLEncoder(nn.Module):
    """Stack of :class:`EncoderLayer`; maps (cells, G) to (cells, G)."""

    def __init__(self, n_genes: int, n_layers: int = 4, n_heads: int = 2, head_dim: int = 512, ffn_dim: int = 1024,
                 dropout: float = 0.2, attention: str = "cell", norm: str = "post"):
        super().__init__()
        across = attention == "batch"
        self.layers = nn.ModuleList(
            EncoderLayer(n_genes, n_heads, head_dim, ffn_dim, dropout, across, norm) for _ in range(n_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ProjectionHead(nn.Module):
    """Z = W2 ReLU(W1 H), L2-normalised rows."""

    def __init__(self, n_in: int, hidden: int = 1024, out: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(h), dim=1)


# ============================================================================ pieces
def student_t(h: torch.Tensor, centers: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Soft assignment q_ij proportional to (1 + ||h_i - c_j||^2 / alpha)^(-(alpha + 1) / 2), rows sum to 1."""
    d2 = torch.cdist(h, centers).pow(2)
    logits = -(alpha + 1.0) / 2.0 * torch.log1p(d2 / alpha)
    return torch.softmax(logits, dim=1)


class _ScaledGram(torch.autograd.Function):
    """``scale * z @ z.T`` whose backward is one product, ``scale * (g + g.T) @ z``.

    Autograd's own ``z @ z.T`` treats the two operands as different tensors and
    spends two (2B x 2B) @ (2B x d) products on the gradient; on a full 4k-cell
    CICL batch that is ~10 % of a training step.
    """

    @staticmethod
    def forward(ctx, z, scale):
        ctx.save_for_backward(z)
        ctx.scale = scale
        return torch.mm(z, z.T).mul_(scale)

    @staticmethod
    def backward(ctx, g):
        (z,) = ctx.saved_tensors
        return torch.mm(g + g.T, z).mul_(ctx.scale), None


def similarities(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scaled cosine similarities of the 2B stacked views ``[z1; z2]`` (rows L2-normalised), self-pairs at -inf."""
    s = _ScaledGram.apply(torch.cat([z1, z2]), 1.0 / temperature)
    return s.fill_diagonal_(float("-inf"))


def _partner(b: int, device) -> torch.Tensor:
    return torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(device)


def nt_xent(s: torch.Tensor) -> torch.Tensor:
    """Symmetric NT-Xent (paper Eq. 12, 14) from :func:`similarities`: each view against the other 2B - 1."""
    n = s.shape[0]
    pos = s[torch.arange(n, device=s.device), _partner(n // 2, s.device)]
    return (torch.logsumexp(s, dim=1) - pos).mean()


def info_nce(s: torch.Tensor) -> torch.Tensor:
    """One-directional InfoNCE with cross-view candidates only (the reference code's instance loss)."""
    b = s.shape[0] // 2
    cross = s[:b, b:]
    return (torch.logsumexp(cross, dim=1) - cross.diagonal()).mean()


def cluster_supcon(s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cluster-aware loss in a bounded form: ``-log(sum_pos / (sum_pos + sum_neg))`` per view, averaged.

    ``s`` comes from :func:`similarities`. Positives of a view (paper Eq. 15): its
    partner view and both views of every other cell with the same pseudo-label;
    negatives: both views of cells with a different pseudo-label. The partner is
    always a positive, so the loss is finite, and it is exactly 0 when a minibatch
    has a single pseudo-cluster.
    """
    y = torch.cat([labels, labels])
    same = y[:, None] == y[None, :]
    pos = torch.logsumexp(s.masked_fill(~same, float("-inf")), dim=1)  # the diagonal is already -inf
    return (torch.logsumexp(s, dim=1) - pos).mean()


class _NTXentSupCon(torch.autograd.Function):
    """NT-Xent and the supcon cluster loss of ``[z1; z2]`` with a single (2B x 2B) matrix.

    Both losses are ``-log`` of sums of row-softmax entries of the scaled similarity
    matrix ``s``: the partner's entry (NT-Xent) and the entries of every
    same-pseudo-label column (the cluster loss). The rows are first sorted by
    pseudo-label, so that the same-label columns of a row form one diagonal block.
    The forward keeps only the softmax ``p``; the backward turns it, in place,
    into the gradient with respect to ``s``,
    ``dL/ds_ij = p_ij (a - [y_j = y_i] c_i) - [j = partner(i)] g_ins / n`` with
    ``a = (g_ins + g_clu) / n`` and ``c_i = g_clu / (n P_i)`` (``P_i`` the row's
    same-label mass), and returns ``scale (G z + G^T z)``. Autograd of the
    separate losses allocates several more (2B x 2B) tensors per step, and
    first-touching fresh memory of that size costs as much as the products.
    Because the backward overwrites ``p``, it can run only once per forward.
    """

    @staticmethod
    def forward(ctx, z, labels, scale):
        n = z.shape[0]
        y = torch.cat([labels, labels])
        order = torch.argsort(y, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=z.device)
        partner = rank[_partner(n // 2, z.device)[order]]  # partner positions in the sorted order
        zs = z[order]
        bounds = torch.cumsum(torch.bincount(y), 0).tolist()
        blocks = [(lo, hi) for lo, hi in zip([0] + bounds[:-1], bounds) if hi > lo]
        # s_ij = scale * cos <= scale, so exp(s - scale) lies in [exp(-2 scale), 1]: no overflow, and no underflow
        # to 0 while scale <= 20 (temperature >= 0.05); the shift cancels in the softmax
        p = torch.mm(zs, zs.T).sub_(1.0).mul_(scale).exp_()
        p.fill_diagonal_(0.0)  # a view is not its own candidate
        p.div_(p.sum(1, keepdim=True))
        idx = torch.arange(n, device=z.device)
        same_mass = torch.cat([p[lo:hi, lo:hi].sum(1) for lo, hi in blocks])  # P_i
        ctx.save_for_backward(zs, p, order, partner, same_mass)
        ctx.blocks, ctx.scale = blocks, scale
        return -torch.log(p[idx, partner]).mean(), -torch.log(same_mass).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_ins, g_clu):
        if getattr(ctx, "used", False):
            raise RuntimeError("ntxent_supcon's backward overwrites its saved softmax, so it can run only once.")
        ctx.used = True
        zs, p, order, partner, same_mass = ctx.saved_tensors
        n = zs.shape[0]
        c = g_clu / (n * same_mass)
        same = [p[lo:hi, lo:hi] * c[lo:hi, None] for lo, hi in ctx.blocks]
        grad = p.mul_((g_ins + g_clu) / n)
        for (lo, hi), blk in zip(ctx.blocks, same):
            grad[lo:hi, lo:hi] -= blk
        grad[torch.arange(n, device=zs.device), partner] -= g_ins / n
        dzs = torch.mm(grad, zs).add_(torch.mm(grad.T, zs)).mul_(ctx.scale)
        return torch.empty_like(dzs).index_copy_(0, order, dzs), None, None


def ntxent_supcon(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
                  temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``nt_xent`` and ``cluster_supcon`` of the views ``z1``, ``z2`` (rows L2-normalised) in one pass.

    Same values and gradients as ``nt_xent(s)`` and ``cluster_supcon(s, labels)`` with
    ``s = similarities(z1, z2, temperature)``, up to float rounding, at a fraction
    of the memory traffic (see :class:`_NTXentSupCon`). Needs temperature >= 0.05.
    """
    if temperature < 0.05:
        raise ValueError("ntxent_supcon needs temperature >= 0.05; use nt_xent and cluster_supcon below that.")
    return _NTXentSupCon.apply(torch.cat([z1, z2]), labels, 1.0 / temperature)


def cluster_fne(s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The reference code's cluster-aware loss: InfoNCE whose negatives exclude same-pseudo-cluster cells.

    Mean over the views of each pseudo-cluster, summed over pseudo-clusters.
    """
    n = s.shape[0]
    y = torch.cat([labels, labels])
    idx = torch.arange(n, device=s.device)
    partner = _partner(n // 2, s.device)
    keep = y[:, None] != y[None, :]
    keep[idx, partner] = True
    pos = s[idx, partner]
    per_view = torch.logsumexp(s.masked_fill(~keep, float("-inf")), dim=1) - pos
    _, inv, counts = torch.unique(y, return_inverse=True, return_counts=True)
    per_cluster = torch.zeros(len(counts), dtype=per_view.dtype, device=per_view.device).index_add_(0, inv, per_view)
    return (per_cluster / counts).sum()


def kmeans(x: torch.Tensor, k: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4,
           generator: torch.Generator, init: torch.Tensor | None = None):
    """K-means (k-means++ seeding, Lloyd iterations) on ``x``'s device.

    Returns (labels, centers, inertia) of the best of ``n_init`` runs. All random
    draws come from the CPU ``generator``, so results are repeatable. An empty
    cluster is re-seeded with the point farthest from its centre.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"K-means needs 1 <= k <= number of cells, got k={k} for {n} cells.")
    x = x.float()
    x_sq = (x * x).sum(1)
    tol_abs = tol * float(x.var(0).mean()) if n > 1 else 0.0
    best = None
    for _ in range(n_init if init is None else 1):
        centers = _kmeanspp(x, x_sq, k, generator) if init is None else init.clone().float()
        for _it in range(max_iter):
            d2 = (x_sq[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]).clamp_min_(0)
            labels = d2.argmin(1)
            counts = torch.bincount(labels, minlength=k)
            new = torch.zeros_like(centers).index_add_(0, labels, x)
            empty = counts == 0
            new = new / counts.clamp_min(1)[:, None].to(x.dtype)
            if bool(empty.any()):
                far = d2.gather(1, labels[:, None]).squeeze(1)
                order = torch.argsort(far, descending=True)
                new[empty] = x[order[: int(empty.sum())]]
            shift = float(((new - centers) ** 2).sum())
            centers = new
            if shift <= tol_abs:
                break
        d2 = (x_sq[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None, :]).clamp_min_(0)
        labels = d2.argmin(1)
        inertia = float(d2.gather(1, labels[:, None]).sum())
        if best is None or inertia < best[2]:
            best = (labels, centers, inertia)
    return best


def _kmeanspp(x, x_sq, k, generator):
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centers = [x[first]]
    d2 = (x_sq - 2 * x @ x[first] + x_sq[first]).clamp_min(0)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:
            nxt = int(torch.randint(n, (1,), generator=generator))
        else:
            r = float(torch.rand((1,), generator=generator)) * total
            nxt = int(torch.searchsorted(torch.cumsum(d2.double(), 0), torch.tensor([r], dtype=torch.float64,
                                                                                     device=x.device)))
            nxt = min(nxt, n - 1)
        centers.append(x[nxt])
        d2 = torch.minimum(d2, (x_sq - 2 * x @ x[nxt] + x_sq[nxt]).clamp_min(0))
    return torch.stack(centers)


def _relabel_by_size(labels: np.ndarray, k: int) -> np.ndarray:
    """Cluster ids ordered by size (0 = largest; ties by first occurrence)."""
    counts = np.bincount(labels, minlength=k)
    first = np.array([np.argmax(labels == c) if counts[c] else len(labels) for c in range(k)])
    order = sorted(range(k), key=lambda c: (-counts[c], first[c]))
    new = np.empty(k, dtype=np.int64)
    new[order] = np.arange(k)
    return new


# ============================================================================ preprocessing
@dataclass
class _Prep:
    genes: pd.Index  # selected genes, model order
    mean: np.ndarray
    std: np.ndarray
    target_sum: float


def _fit_preprocessing(X: sp.csr_matrix, genes: pd.Index, n_top: int) -> tuple[_Prep, sp.csr_matrix]:
    lib = np.asarray(X.sum(axis=1)).ravel()
    if not (lib > 0).any():
        raise ValueError("No cell has any counts; CICL needs a non-empty count matrix.")
    target = float(np.median(lib[lib > 0]))
    X_log = normalize_total(X, target, log=True)
    nd = normalized_dispersion(X_log, logged=True)
    valid = np.isfinite(nd)
    if valid.sum() < 10:
        raise ValueError(
            f"Only {int(valid.sum())} genes vary across cells; CICL needs at least 10 variable genes "
            "(check that X holds counts of many genes)."
        )
    n_top = min(n_top, int(valid.sum()))
    score = np.where(valid, nd, -np.inf)
    keep = np.sort(np.argsort(-score, kind="stable")[:n_top])
    Xh = X_log[:, keep].tocsr()
    mean, std = _column_moments(Xh)
    return _Prep(pd.Index(genes[keep]), mean, std, target), Xh


def _column_moments(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    n = X.shape[0]
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    msq = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()
    var = np.maximum(msq - mean**2, 0) * (n / max(n - 1, 1))
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def _apply_preprocessing(X: sp.csr_matrix, genes: pd.Index, prep: _Prep) -> sp.csr_matrix:
    """Size-factor normalise with the training median, log1p, align to the model genes (sparse)."""
    return align_columns(normalize_total(X, prep.target_sum, log=True), genes, prep.genes)


class _Scaler:
    """z-scores densified minibatches on the device, clipped to [-max_value, max_value] when given."""

    def __init__(self, prep: _Prep, device, max_value: float | None = None):
        self.mean = torch.as_tensor(prep.mean, device=device)
        self.inv_std = torch.as_tensor(1.0 / prep.std, device=device)
        self.max_value = max_value

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) * self.inv_std
        return z if self.max_value is None else z.clamp_(-self.max_value, self.max_value)


# ============================================================================ estimating K
def _pca_scores(X: sp.csr_matrix, scaler: _Scaler, n_pcs: int, chunk: int = 4096) -> np.ndarray:
    """Top principal components of the scaled matrix, accumulated over densified chunks (X stays sparse)."""
    n, g = X.shape
    total = np.zeros(g)
    gram = np.zeros((g, g))
    for _, xb in iter_dense(X, chunk, torch.device("cpu")):
        z = scaler(xb).double().numpy()
        total += z.sum(0)
        gram += z.T @ z
    mean = total / n
    cov = gram / n - np.outer(mean, mean)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][: min(n_pcs, g, max(n - 1, 1))]
    vecs = vecs[:, order]
    vecs *= np.sign(vecs[np.abs(vecs).argmax(0), np.arange(vecs.shape[1])])  # deterministic signs
    out = [scaler(xb).double().numpy() @ vecs - mean @ vecs for _, xb in iter_dense(X, chunk, torch.device("cpu"))]
    return np.concatenate(out).astype(np.float32)


def estimate_n_clusters(pcs: np.ndarray, *, method: str = "silhouette", k_min: int = 2, k_max: int = 20,
                        seed: int = 0, n_init: int = 10, n_neighbors: int = 15,
                        max_cells: int = 5000) -> tuple[int, dict[int, float]]:
    """Estimate the number of clusters from principal-component scores ``pcs`` (cells x PCs).

    ``"silhouette"``: K-means for each K in ``[k_min, k_max]``; K with the largest
    mean silhouette width (Euclidean). ``"eigengap"``: the eigenvalues of the
    symmetric normalised Laplacian of a symmetrised ``n_neighbors``-nearest-neighbour
    graph (Gaussian weights with a per-cell bandwidth); K with the largest gap
    ``lambda_{K+1} - lambda_K``. At most ``max_cells`` cells (a seeded subsample) are used.
    Returns (K, {K: score}).
    """
    from sklearn.metrics import silhouette_score

    n = pcs.shape[0]
    rng = make_rng(seed)
    if n > max_cells:
        pcs = pcs[np.sort(rng.choice(n, max_cells, replace=False))]
        n = max_cells
    k_max = min(k_max, n - 1)
    if k_max < k_min:
        raise ValueError(f"Too few cells ({n}) to estimate the number of clusters; pass n_clusters.")
    if method == "silhouette":
        gen = torch.Generator().manual_seed(int(seed))
        x = torch.as_tensor(np.ascontiguousarray(pcs, dtype=np.float32))
        scores = {}
        for k in range(k_min, k_max + 1):
            labels, _, _ = kmeans(x, k, n_init=n_init, generator=gen)
            lab = labels.numpy()
            scores[k] = float(silhouette_score(pcs, lab)) if len(np.unique(lab)) > 1 else -1.0
        best = max(scores, key=lambda k: (scores[k], -k))
        return best, scores
    if method == "eigengap":
        from scipy.sparse.csgraph import laplacian
        from sklearn.neighbors import NearestNeighbors

        nn_ = min(n_neighbors, n - 1)
        dist, ind = NearestNeighbors(n_neighbors=nn_ + 1).fit(pcs).kneighbors(pcs)
        dist, ind = dist[:, 1:], ind[:, 1:]
        sigma = np.maximum(dist[:, -1], 1e-12)
        w = np.exp(-(dist**2) / (sigma[:, None] * sigma[ind]))
        A = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), nn_), ind.ravel())), shape=(n, n))
        A = A.maximum(A.T)
        L = laplacian(A, normed=True)
        m = min(k_max + 2, n)
        if n <= 3000:
            vals = np.linalg.eigvalsh(L.toarray())[:m]
        else:
            from scipy.sparse.linalg import eigsh

            vals = np.sort(eigsh(L, k=m, sigma=-1e-3, which="LM", v0=np.ones(n), return_eigenvectors=False))
        scores = {k: float(vals[k] - vals[k - 1]) for k in range(k_min, min(k_max, m - 1) + 1)}
        best = max(scores, key=lambda k: (scores[k], -k))
        return best, scores
    raise ValueError(f"k_estimator must be 'silhouette' or 'eigengap', not {method!r}.")


# ============================================================================ estimator
class CICL:
    """CICL clustering estimator.

    ``CICL(n_clusters=8).fit(adata)`` trains the encoder on ``adata``'s raw counts
    (``X`` or ``layer``) and clusters it (:attr:`result_`, also returned by
    :meth:`fit_predict`); :meth:`predict` assigns new cells to the learned clusters;
    :meth:`transform` returns the embedding. ``save`` / ``load`` use safetensors + JSON.

    Parameters
    ----------
    config
        A :class:`CICLConfig` or dict; keyword ``overrides`` replace single options
        (``n_clusters`` is one of them; ``None`` estimates K).
    seed
        Seeds the weights, minibatch order, noise, dropout and every K-means.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    verbose
        Show a progress bar (default: ``pybridge.settings.verbose``).
    """

    method = "cicl"
    config_cls = CICLConfig

    def __init__(self, config=None, *, seed: int = 0, device: str = "auto", verbose: bool | None = None, **overrides):
        self.config = make_config(CICLConfig, config, overrides)
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.verbose = resolve_verbose(verbose)
        self.encoder_: CICLEncoder | None = None
        self.head_: ProjectionHead | None = None
        self.prep_: _Prep | None = None
        self.centers_: torch.Tensor | None = None
        self.n_clusters_: int | None = None
        self.k_scores_: dict[int, float] | None = None
        self.history_: dict = {}
        self.fit_info_: dict = {}
        self.result_: ClusteringResult | None = None
        #: optional monitor, called after every epoch as ``f(epoch, history, embed)`` where ``embed()``
        #: returns the current clean-view embedding of the training cells (numpy). Training never reads it back.
        self.epoch_callback = None

    # ------------------------------------------------------------------ helpers
    def _check_fitted(self):
        if self.encoder_ is None:
            raise RuntimeError("This CICL model is not fitted yet; call fit(adata) or CICL.load(dir) first.")

    def _encode(self, X: sp.csr_matrix, scaler: _Scaler) -> torch.Tensor:
        """Clean-view embedding of all rows (eval mode), on the device."""
        enc = self.encoder_.eval()
        chunk = self.config.batch_size if self.config.attention == "batch" else 2048
        out = []
        with torch.no_grad():
            for _, xb in iter_dense(X, chunk, self.device):
                out.append(enc(scaler(xb)))
        return torch.cat(out)

    def _assign(self, h: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        q = student_t(h, self.centers_, self.config.alpha)
        return q.argmax(1).cpu().numpy(), q.cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------- fitting
    def fit(self, adata, *, layer: str | None = None) -> "CICL":
        """Train on ``adata`` (raw counts in ``X`` or ``layer``) and cluster it."""
        timer = Timer()
        cfg = self.config
        t0 = time.perf_counter()
        with timer("preprocess_s"):
            X = get_counts(adata, layer, what="data")
            n = X.shape[0]
            if n < 10:
                raise ValueError(f"CICL needs at least 10 cells, got {n}.")
            genes = pd.Index(adata.var_names).astype(str)
            self.prep_, Xh = _fit_preprocessing(X, genes, cfg.n_top_genes)
        with timer("estimate_k_s"):
            if cfg.n_clusters is None:
                pcs = _pca_scores(Xh, _Scaler(self.prep_, "cpu", None), cfg.n_pcs)  # unclipped z-scores
                k, self.k_scores_ = estimate_n_clusters(pcs, method=cfg.k_estimator, k_min=cfg.k_min,
                                                        k_max=cfg.k_max, seed=self.seed, n_init=cfg.kmeans_n_init,
                                                        n_neighbors=cfg.k_neighbors)
                logger.info("cicl: estimated %d clusters (%s)", k, cfg.k_estimator)
            else:
                k = int(cfg.n_clusters)
                if k >= n:
                    raise ValueError(f"n_clusters={k} must be smaller than the number of cells ({n}).")
        self.n_clusters_ = k
        if cfg.batch_size < 2 * k and n >= 2 * k:
            raise ValueError(f"batch_size={cfg.batch_size} is too small for {k} clusters; use at least {2 * k}.")
        with timer("train_s"):
            self._train(Xh, k)
        with timer("cluster_s"):
            scaler = _Scaler(self.prep_, self.device, self.config.max_value)
            h = self._encode(Xh, scaler)
            gen = torch.Generator().manual_seed(self.seed + 1)
            labels, centers, inertia = kmeans(h, k, n_init=cfg.kmeans_n_init, max_iter=cfg.kmeans_max_iter,
                                              generator=gen)
            perm = _relabel_by_size(labels.cpu().numpy(), k)
            self.centers_ = centers[torch.as_tensor(np.argsort(perm), device=centers.device)]
            _, q = self._assign(h)
            labels = perm[labels.cpu().numpy()]
        self.fit_info_.update({
            "n_cells": int(n),
            "n_genes_input": int(len(genes)),
            "n_genes_model": int(len(self.prep_.genes)),
            "n_clusters": int(k),
            "n_clusters_estimated": cfg.n_clusters is None,
            "k_scores": None if self.k_scores_ is None else {str(a): b for a, b in self.k_scores_.items()},
            "final_inertia": float(inertia),
            "timings": {**timer.times, "total_s": time.perf_counter() - t0},
        })
        self.result_ = self._result(adata.obs_names, labels, q, h.cpu().numpy())
        return self

    def fit_predict(self, adata, *, layer: str | None = None) -> ClusteringResult:
        """Fit and return the clustering of ``adata``."""
        return self.fit(adata, layer=layer).result_

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.config
        noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
        if cfg.augmentation == "paper":
            lo, hi = noise.min(1, keepdim=True).values, noise.max(1, keepdim=True).values
            return x + (noise - lo) / (hi - lo).clamp_min(1e-12)
        n_genes = x.shape[1]
        n_noisy = max(1, int(cfg.noise_fraction * n_genes))
        pick = torch.rand(x.shape, generator=gen, device=gen.device).argsort(1)[:, :n_noisy].to(x.device)
        mask = torch.zeros_like(x).scatter_(1, pick, 1.0)
        return x + cfg.noise_std * noise * mask

    def _train(self, Xh: sp.csr_matrix, k: int) -> None:
        cfg, dev = self.config, self.device
        seed_everything(self.seed)
        rng = make_rng(self.seed)
        noise_gen = torch.Generator(device=dev).manual_seed(self.seed)
        km_gen = torch.Generator().manual_seed(self.seed)
        G = Xh.shape[1]
        enc = CICLEncoder(G, cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.ffn_dim, cfg.dropout, cfg.attention,
                          cfg.norm).to(dev)
        head = ProjectionHead(G, cfg.proj_hidden, cfg.proj_dim).to(dev)
        self.encoder_, self.head_ = enc, head
        opt = torch.optim.Adam([
            {"params": enc.parameters(), "lr": cfg.lr},
            {"params": head.parameters(), "lr": cfg.proj_lr if cfg.proj_lr is not None else cfg.lr},
        ], weight_decay=cfg.weight_decay)
        scaler = _Scaler(self.prep_, dev, cfg.max_value)
        fixed_centers = None
        if cfg.pseudo_labels == "once":
            h0 = self._encode(Xh, scaler)
            _, fixed_centers, _ = kmeans(h0, k, n_init=cfg.kmeans_n_init, max_iter=cfg.kmeans_max_iter,
                                         generator=km_gen)
        instance = nt_xent if cfg.instance_loss == "ntxent" else info_nce
        cluster = cluster_supcon if cfg.cluster_loss == "supcon" else cluster_fne
        # the default pair of losses in one pass (see ntxent_supcon); needs temperature >= 0.05
        fused = (cfg.instance_loss, cfg.cluster_loss) == ("ntxent", "supcon") and cfg.lam > 0 \
            and cfg.temperature >= 0.05
        history = History()
        n = Xh.shape[0]
        bar = progress(cfg.n_epochs, self.verbose, "CICL")
        for _epoch in range(cfg.n_epochs):
            sums = np.zeros(3)
            batches = epoch_batches(n, cfg.batch_size, rng, min_size=4)
            for idx in batches:
                x = scaler(densify(Xh, idx, dev))
                enc.eval()
                with torch.no_grad():
                    h = enc(x)
                    if fixed_centers is None:
                        _, centers, _ = kmeans(h, min(k, len(idx)), n_init=cfg.kmeans_n_init_train,
                                               max_iter=cfg.kmeans_max_iter, generator=km_gen)
                    else:
                        centers = fixed_centers
                    pseudo = student_t(h, centers, cfg.alpha).argmax(1)
                enc.train()
                head.train()
                x1, x2 = self._augment(x, noise_gen), self._augment(x, noise_gen)
                if cfg.attention == "cell":
                    h12 = enc(torch.cat([x1, x2]))
                else:
                    h12 = torch.cat([enc(x1), enc(x2)])
                z1, z2 = head(h12).split(len(idx))
                if fused:
                    l_ins, l_clu = ntxent_supcon(z1, z2, pseudo, cfg.temperature)
                else:
                    sim = similarities(z1, z2, cfg.temperature)
                    l_ins = instance(sim)
                    l_clu = cluster(sim, pseudo) if cfg.lam > 0 else l_ins.new_zeros(())
                loss = l_ins + cfg.lam * l_clu
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += [float(loss.detach()), float(l_ins.detach()), float(l_clu.detach())]
            sums /= max(len(batches), 1)
            history.record(loss=sums[0], instance=sums[1], cluster=sums[2])
            if self.epoch_callback is not None:
                state = torch.get_rng_state()
                self.epoch_callback(_epoch, history.to_dict(), lambda: self._encode(Xh, scaler).cpu().numpy())
                torch.set_rng_state(state)
            bar.update(1)
            bar.set_postfix(loss=f"{sums[0]:.4f}")
        bar.close()
        enc.eval()
        head.eval()
        self.history_ = history.to_dict()
        self.fit_info_["epochs_trained"] = cfg.n_epochs
        self.fit_info_["steps"] = cfg.n_epochs * len(epoch_batches(n, cfg.batch_size, make_rng(0), min_size=4))
        logger.info("cicl: trained %d epochs, final loss %.4f", cfg.n_epochs, self.history_["loss"][-1])

    # ---------------------------------------------------------------- prediction
    def _prepare(self, adata, layer):
        self._check_fitted()
        X = get_counts(adata, layer, what="data")
        genes = pd.Index(adata.var_names).astype(str)
        overlap = gene_overlap(self.prep_.genes, genes, what="data")
        return _apply_preprocessing(X, genes, self.prep_), overlap

    def transform(self, adata, *, layer: str | None = None) -> np.ndarray:
        """Encoder embedding (cells x model genes) of ``adata``."""
        Xh, _ = self._prepare(adata, layer)
        return self._encode(Xh, _Scaler(self.prep_, self.device, self.config.max_value)).cpu().numpy()

    def predict(self, adata, *, layer: str | None = None) -> ClusteringResult:
        """Assign the cells of ``adata`` to the learned clusters (nearest centroid / Student-t)."""
        t0 = time.perf_counter()
        Xh, overlap = self._prepare(adata, layer)
        h = self._encode(Xh, _Scaler(self.prep_, self.device, self.config.max_value))
        labels, q = self._assign(h)
        return self._result(adata.obs_names, labels, q, h.cpu().numpy(), overlap=overlap,
                            predict_s=time.perf_counter() - t0)

    def _result(self, obs_names, labels, q, embedding, overlap=None, predict_s=None) -> ClusteringResult:
        params = {
            "config": dataclasses.asdict(self.config),
            "seed": self.seed,
            "device": str(self.device),
            "n_clusters": int(self.n_clusters_),
            "training": {k: v for k, v in self.fit_info_.items() if k != "timings"},
            "timings": {**self.fit_info_.get("timings", {}), **({"predict_s": predict_s} if predict_s else {})},
            "history": self.history_,
            "genes": list(self.prep_.genes),
            "gene_overlap": overlap,
            "version": _version(),
        }
        return ClusteringResult(
            obs_names=pd.Index(obs_names),
            clusters=np.asarray(labels, dtype=np.int64),
            confidence=q.max(axis=1),
            probabilities=q,
            embedding=embedding,
            method=self.method,
            params=params,
        )

    # ---------------------------------------------------------------- persistence
    def save(self, path):
        """Write weights, centroids and preprocessing statistics (safetensors) and metadata (JSON)."""
        self._check_fitted()
        tensors = join_states(enc=self.encoder_.state_dict(), head=self.head_.state_dict())
        tensors["centers"] = self.centers_
        tensors["prep.mean"] = torch.as_tensor(self.prep_.mean)
        tensors["prep.std"] = torch.as_tensor(self.prep_.std)
        meta = {
            "config": dataclasses.asdict(self.config),
            "genes": list(self.prep_.genes),
            "target_sum": self.prep_.target_sum,
            "n_clusters": self.n_clusters_,
            "seed": self.seed,
            "fit_info": self.fit_info_,
            "history": self.history_,
        }
        return _io.save_model(path, self.method, tensors, meta)

    @classmethod
    def load(cls, path, *, device: str = "auto", verbose: bool | None = None) -> "CICL":
        """Load a model written by :meth:`save` (never unpickles)."""
        tensors, meta = _io.load_model(path, cls.method, device="cpu")
        valid = {f.name for f in dataclasses.fields(CICLConfig)}
        saved = {k: v for k, v in meta["config"].items() if k in valid}
        saved.setdefault("norm", "post")  # models saved before the option existed are post-LN
        obj = cls(saved, seed=meta.get("seed", 0), device=device, verbose=verbose)
        cfg = obj.config
        obj.prep_ = _Prep(pd.Index(meta["genes"]).astype(str), tensors["prep.mean"].numpy(),
                          tensors["prep.std"].numpy(), float(meta["target_sum"]))
        G = len(obj.prep_.genes)
        enc = CICLEncoder(G, cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.ffn_dim, cfg.dropout, cfg.attention, cfg.norm)
        head = ProjectionHead(G, cfg.proj_hidden, cfg.proj_dim)
        try:
            enc.load_state_dict(split_state(tensors, "enc"))
            head.load_state_dict(split_state(tensors, "head"))
        except (RuntimeError, KeyError) as err:  # torch: size mismatch / missing or unexpected keys
            raise _io.config_mismatch(path, err) from None
        obj.encoder_, obj.head_ = enc.to(obj.device).eval(), head.to(obj.device).eval()
        obj.centers_ = tensors["centers"].to(obj.device)
        obj.n_clusters_ = int(meta["n_clusters"])
        obj.fit_info_ = meta.get("fit_info", {})
        obj.history_ = meta.get("history", {})
        return obj
