"""SC3-style consensus clustering in torch (Kiselev et al. 2017), as the paper's clustering step.

For each cell-cell distance (Euclidean, Pearson, Spearman) and each transform
of the distance matrix (PCA of the column-standardised matrix; eigenvectors
of the normalised graph Laplacian of exp(-D / max D)), k-means runs on the
first d eigenvectors for every d in [floor(0.04 n), ceil(0.07 n)] (at most 15
values, drawn with the seed when there are more). The best of ``n_init``
k-means++ starts is kept for each (distance, transform, d). The co-association
matrix of those clusterings is averaged (CSPA) and cut into k groups by
complete-linkage hierarchical clustering of its rows (Euclidean distances).

Distances, eigendecompositions, the batched k-means and the consensus run on
the device. The linkage itself (an O(n^2) nearest-neighbour-chain algorithm)
runs in SciPy on exactly representable integer co-occurrence counts, so ties
are resolved identically on every device.

Where the two SC3 versions the paper could have used differ, this follows
the original SC3 (R/Bioconductor): degrees of the Laplacian come from the
affinity matrix (the authors' Python port uses the distance matrix), and the
default ensemble uses all distances and both transforms (the authors' Python
CLI defaults to Euclidean + PCA only; pass ``distances=("euclidean",),
transforms=("pca",)`` for that). Like the Python port, k-means uses 10 starts
per run (R SC3 uses up to 1000) and at most 300 Lloyd iterations.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.cluster.hierarchy as hc
import torch

from .._clustering import kmeans_batched, relabel_by_size
from ._nmf import MixedTarget

DISTANCES = ("euclidean", "pearson", "spearman")
TRANSFORMS = ("pca", "laplacian")


# ---------------------------------------------------------------------------- distances
def _rank_rows(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (1-based, ties share their mean rank) of each row."""
    s, _ = torch.sort(x, dim=1)
    lo = torch.searchsorted(s, x.contiguous(), right=False)
    hi = torch.searchsorted(s, x.contiguous(), right=True)
    return (lo + hi + 1).to(torch.float64) / 2.0


def _unit_centred(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-300)


def _spearman_corr(mt: MixedTarget, theta: float, block: int = 1024) -> torch.Tensor:
    """Spearman correlation between cells over genes, from blocks of dense mixed rows."""
    n = mt.n
    starts = list(range(0, n, block))
    C = torch.empty((n, n), dtype=torch.float64, device=mt.G.device)
    for bi, si in enumerate(starts):
        ii = np.arange(si, min(si + block, n))
        zi = _unit_centred(_rank_rows(mt.rows(ii, theta)))
        for sj in starts[bi:]:
            jj = np.arange(sj, min(sj + block, n))
            zj = zi if sj == si else _unit_centred(_rank_rows(mt.rows(jj, theta)))
            c = zi @ zj.T
            C[si : si + len(ii), sj : sj + len(jj)] = c
            C[sj : sj + len(jj), si : si + len(ii)] = c.T
    return C


def distance_matrix(mt: MixedTarget, theta: float, metric: str) -> torch.Tensor:
    """Cells x cells distances of the mixed target at ``theta`` (float64, zero diagonal)."""
    if metric == "euclidean":
        G = mt.gram(theta)
        d = torch.diagonal(G)
        D = (d[:, None] + d[None, :] - 2.0 * G).clamp(min=0).sqrt()
    elif metric == "pearson":
        G, s, g = mt.gram(theta), mt.row_sums(theta), float(mt.n_genes)
        m = s / g
        cov = G / g - m[:, None] * m[None, :]
        sd = torch.diagonal(cov).clamp(min=0).sqrt()
        ok = sd > 1e-12
        corr = cov / torch.where(ok, sd, 1.0)[:, None] / torch.where(ok, sd, 1.0)[None, :]
        corr = torch.where(ok[:, None] & ok[None, :], corr, torch.zeros_like(corr))
        D = 1.0 - corr.clamp(-1, 1)
    elif metric == "spearman":
        D = 1.0 - _spearman_corr(mt, theta).clamp(-1, 1)
    else:
        raise ValueError(f"Unknown SC3 distance {metric!r}; use one of {', '.join(DISTANCES)}.")
    D.fill_diagonal_(0.0)
    return D


# ---------------------------------------------------------------------------- transforms
def transform(D: torch.Tensor, method: str, n_vectors: int, dtype=torch.float32) -> torch.Tensor:
    """The first ``n_vectors`` eigenvectors of SC3's PCA or Laplacian transform of ``D`` (cells x n_vectors)."""
    if method == "pca":
        M = D - D.mean(dim=0, keepdim=True)
        sd = M.std(dim=0, unbiased=False)
        M = M / torch.where(sd > 0, sd, torch.ones_like(sd))[None, :]
        M = M.to(dtype)
        vals, vecs = torch.linalg.eigh(M.T @ M)  # right singular vectors of M
        return vecs[:, torch.argsort(vals, descending=True)[:n_vectors]]
    if method == "laplacian":
        mx = float(D.max())
        A = torch.exp(-D / mx) if mx > 0 else torch.ones_like(D)
        deg = A.sum(dim=1).rsqrt()
        L = torch.eye(D.shape[0], dtype=D.dtype, device=D.device) - deg[:, None] * A * deg[None, :]
        vals, vecs = torch.linalg.eigh(L.to(dtype))
        return vecs[:, torch.argsort(vals)[:n_vectors]]
    raise ValueError(f"Unknown SC3 transform {method!r}; use one of {', '.join(TRANSFORMS)}.")


def dimension_range(
    n: int, lo: float = 0.04, hi: float = 0.07, max_dims: int = 15, rng: np.random.Generator | None = None
) -> list[int]:
    """SC3's numbers of eigenvectors: floor(lo n) .. ceil(hi n), at most ``max_dims`` drawn at random."""
    d_min = max(1, int(math.floor(lo * n)))
    d_max = max(d_min, min(int(math.ceil(hi * n)), n - 1))
    ds = list(range(d_min, d_max + 1))
    if len(ds) > max_dims:
        rng = rng or np.random.default_rng(0)
        ds = sorted(rng.choice(ds, size=max_dims, replace=False).tolist())
    return ds


# ---------------------------------------------------------------------------- consensus
def consensus_counts(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Co-association counts (cells x cells): in how many of the clusterings two cells share a cluster."""
    R, n = labels.shape
    Y = torch.nn.functional.one_hot(labels.T.reshape(n, R), k).reshape(n, R * k).to(torch.float64)
    return Y @ Y.T


def hierarchical_cut(counts: torch.Tensor, k: int) -> np.ndarray:
    """Complete-linkage clustering of the rows of the co-association matrix, cut into ``k`` groups."""
    n = counts.shape[0]
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    P = counts @ counts  # symmetric: rows' dot products, exact integers in float64
    sq = torch.diagonal(P)
    D2 = (sq[:, None] + sq[None, :] - 2.0 * P).clamp(min=0)
    iu = np.triu_indices(n, 1)
    cond = D2.sqrt().cpu().numpy()[iu]
    Z = hc.linkage(cond, method="complete")
    cut = hc.cut_tree(Z, n_clusters=k).ravel()
    return relabel_by_size(cut)


def sc3(
    mt: MixedTarget,
    theta: float,
    k: int,
    *,
    seed: int,
    distances=DISTANCES,
    transforms=TRANSFORMS,
    d_range=(0.04, 0.07),
    max_dims: int = 15,
    n_init: int = 10,
    max_iter: int = 300,
    device: torch.device | None = None,
) -> tuple[np.ndarray, torch.Tensor, dict]:
    """SC3 consensus clustering of the mixed target at ``theta`` into ``k`` clusters.

    A pure function of its inputs and ``seed``: every call draws its random
    numbers from a fresh generator, so theta = 0 reproduces target-only SC3.
    Returns (labels, consensus matrix in [0, 1], info).
    """
    n = mt.n
    if not 2 <= k <= n:
        raise ValueError(f"n_clusters={k} must be between 2 and the number of cells ({n}).")
    device = device or mt.G.device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    ds = dimension_range(n, d_range[0], d_range[1], max_dims, np.random.default_rng(int(seed)))
    d_max = max(ds)
    runs = []
    for metric in distances:
        D = distance_matrix(mt, theta, metric)
        for method in transforms:
            V = transform(D, method, d_max)
            X = V[None].repeat(len(ds), 1, 1)
            for i, d in enumerate(ds):
                X[i, :, d:] = 0  # zero columns do not change distances: d eigenvectors per set
            runs.append(kmeans_batched(X, k, n_init, max_iter, gen))
    labels_all = torch.cat(runs)  # (R, n)
    counts = consensus_counts(labels_all, k)
    labels = hierarchical_cut(counts, k)
    R = labels_all.shape[0]
    return labels, counts / R, {"dims": ds, "n_runs": int(R)}


def consensus_scores(consensus: torch.Tensor, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell soft assignment and confidence from the consensus matrix.

    ``P[i, c]`` is the mean co-association of cell i with the other members of
    cluster c (1 for a cell alone in its cluster); the confidence is ``P`` at
    the cell's own cluster, i.e. the fraction of the ensemble's clusterings
    that agree, on average, with the final grouping of the cell. The soft
    assignment is ``P`` normalised over clusters.
    """
    dev = consensus.device
    lab = torch.as_tensor(labels, device=dev)
    Y = torch.nn.functional.one_hot(lab, k).to(consensus.dtype)
    sums = consensus @ Y - Y * torch.diagonal(consensus)[:, None]
    sizes = Y.sum(0)[None, :] - Y
    P = torch.where(sizes > 0, sums / sizes.clamp(min=1), torch.where(Y > 0, torch.ones_like(sums), sums * 0))
    conf = P.gather(1, lab[:, None]).squeeze(1)
    tot = P.sum(1, keepdim=True)
    prob = torch.where(tot > 0, P / tot.clamp(min=1e-300), Y)
    return prob.cpu().numpy(), conf.clamp(0, 1).cpu().numpy()


# ---------------------------------------------------------------------------- KTA, number of clusters
def kernel_target_alignment(K: torch.Tensor, labels) -> float:
    """Kernel-target alignment between a kernel ``K`` and the linear kernel of one-hot ``labels``.

    Both kernels are centred and cosine-normalised (K_ij / sqrt(K_ii K_jj))
    before <Kx, Ky>_F / (||Kx||_F ||Ky||_F), as in the authors' code. A cell
    whose centred self-similarity is zero up to rounding (it sits at the mean,
    e.g. every cell of a mixture at theta = 1 when all were assigned to one
    source component) gets a zero row instead of amplified rounding noise, so
    a kernel without structure has alignment 0. (The authors' code replaces
    the whole kernel by its diagonal when any K_ii <= 1e-16.)
    """
    K = K.to(torch.float64)
    n = K.shape[0]
    lab = torch.as_tensor(np.asarray(_codes(labels)), device=K.device)
    Y = torch.nn.functional.one_hot(lab).to(torch.float64)
    Ky = Y @ Y.T

    def centre_norm(M):
        scale = float(torch.diagonal(M).abs().max())
        M = M - M.mean(0, keepdim=True) - M.mean(1, keepdim=True) + M.mean()
        d = torch.diagonal(M)
        ok = d > 1e-9 * max(scale, 1e-300)
        d = torch.where(ok, d, torch.ones_like(d)).sqrt()
        return M / d[:, None] / d[None, :] * (ok[:, None] & ok[None, :])

    Kx, Ky = centre_norm(K), centre_norm(Ky)
    num = (Kx * Ky).sum()
    den = Kx.norm() * Ky.norm()
    if n < 2 or float(den) == 0:
        return 0.0
    return float(num / den)


def _codes(labels) -> np.ndarray:
    _, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    return codes.astype(np.int64)


def estimate_k(mt: MixedTarget) -> int:
    """SC3's estimate of k: eigenvalues of the cell-cell matrix of per-cell standardised
    expression above the Tracy-Widom bound (p = 0.001) for a random matrix of that size."""
    G, s, g, n = mt.gram(0.0), mt.row_sums(0.0), float(mt.n_genes), mt.n
    m = s / g
    cov = G - g * m[:, None] * m[None, :]
    sd = (torch.diagonal(cov).clamp(min=0) / max(g - 1, 1)).sqrt()
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    Z = cov / sd[:, None] / sd[None, :]
    vals = torch.linalg.eigvalsh(Z)
    mu = (math.sqrt(g - 1) + math.sqrt(n)) ** 2
    sigma = (math.sqrt(g - 1) + math.sqrt(n)) * (1 / math.sqrt(g - 1) + 1 / math.sqrt(n)) ** (1 / 3)
    k = int((vals > 3.2730 * sigma + mu).sum())
    return int(min(max(k, 2), n - 1))
