"""CICL's networks (transformer encoder, projection head) and contrastive losses: tensors only."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

#: where the layer norm sits in each encoder block
NORMS = ("post", "pre", "none")


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

    def __init__(
        self,
        d: int,
        n_heads: int,
        head_dim: int,
        ffn_dim: int,
        dropout: float,
        attend_across_cells: bool,
        norm: str = "post",
    ):
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

    def __init__(
        self,
        n_genes: int,
        n_layers: int = 4,
        n_heads: int = 2,
        head_dim: int = 512,
        ffn_dim: int = 1024,
        dropout: float = 0.2,
        attention: str = "cell",
        norm: str = "post",
    ):
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


def ntxent_supcon(
    z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
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
