"""Clustering pieces shared by the clustering methods: k-means (one set, or many sets at once),
cluster ids ordered by size, the Student-t kernel and estimating the number of clusters."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..train import make_rng


def student_t(h: torch.Tensor, centers: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Soft assignment q_ij proportional to (1 + ||h_i - c_j||^2 / alpha)^(-(alpha + 1) / 2), rows sum to 1."""
    d2 = torch.cdist(h, centers).pow(2)
    logits = -(alpha + 1.0) / 2.0 * torch.log1p(d2 / alpha)
    return torch.softmax(logits, dim=1)


def kmeans(
    x: torch.Tensor,
    k: int,
    *,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    generator: torch.Generator,
    init: torch.Tensor | None = None,
):
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
            nxt = int(
                torch.searchsorted(
                    torch.cumsum(d2.double(), 0), torch.tensor([r], dtype=torch.float64, device=x.device)
                )
            )
            nxt = min(nxt, n - 1)
        centers.append(x[nxt])
        d2 = torch.minimum(d2, (x_sq - 2 * x @ x[nxt] + x_sq[nxt]).clamp_min(0))
    return torch.stack(centers)


def size_order(labels: np.ndarray, k: int) -> np.ndarray:
    """New id of each of the clusters 0..k-1, ordered by size (0 = largest; ties by first occurrence; clusters
    without cells last)."""
    counts = np.bincount(labels, minlength=k)
    first = np.array([np.argmax(labels == c) if counts[c] else len(labels) for c in range(k)])
    order = sorted(range(k), key=lambda c: (-counts[c], first[c]))
    new = np.empty(k, dtype=np.int64)
    new[order] = np.arange(k)
    return new


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster ids 0.. ordered by decreasing size (ties: first appearance)."""
    labels = np.asarray(labels)
    uniq, first, sizes = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(len(uniq)), key=lambda i: (-sizes[i], first[i]))
    new = np.empty(len(uniq), dtype=np.int64)
    new[order] = np.arange(len(uniq))
    return new[np.searchsorted(uniq, labels)]


def kmeans_batched(X: torch.Tensor, k: int, n_init: int, max_iter: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means with k-means++ starts for a batch of point sets X (b, n, d).

    All ``n_init`` starts of all sets run together (one batched matrix product
    per Lloyd step). Returns the labels (b, n) of the start with the smallest
    inertia per set. An empty cluster keeps its previous centre.
    """
    b, n, d = X.shape
    dev = X.device
    bi = torch.arange(b, device=dev)[:, None]
    xx = (X * X).sum(-1)  # (b, n)

    def d2_to(c):  # squared distances of all points to one centre per (set, start): (b, r, n)
        return (xx[:, None, :] + (c * c).sum(-1)[:, :, None] - 2.0 * torch.einsum("bnd,brd->brn", X, c)).clamp(min=0)

    # k-means++ seeding, independently for every (set, start)
    first = torch.randint(0, n, (b, n_init), generator=generator, device=generator.device).to(dev)
    centres = [X[bi, first]]  # (b, r, d)
    D2 = d2_to(centres[0])
    for _ in range(1, k):
        w = D2.reshape(b * n_init, n)
        tot = w.sum(1, keepdim=True)
        w = torch.where(tot > 0, w / tot.clamp(min=1e-30), torch.full_like(w, 1.0 / n))
        pick = torch.multinomial(w.to(generator.device), 1, generator=generator).to(dev).reshape(b, n_init)
        c = X[bi, pick]
        centres.append(c)
        D2 = torch.minimum(D2, d2_to(c))
    C = torch.stack(centres, dim=2)  # (b, r, k, d)
    offsets = (torch.arange(n_init, device=dev) * k)[None, None, :]

    def assign(C):
        # ||c||^2 - 2 x.c for all starts at once: (b, n, r, k); ||x||^2 does not change the argmin
        part = (C * C).sum(-1)[:, None] - 2.0 * torch.bmm(X, C.reshape(b, n_init * k, d).transpose(1, 2)).view(
            b, n, n_init, k
        )
        return part.min(-1)

    labels = None
    for _ in range(max_iter):
        new = assign(C).indices  # (b, n, r)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        onehot = torch.zeros((b, n, n_init * k), dtype=X.dtype, device=dev)
        onehot.scatter_(2, labels + offsets, 1.0)
        sums = torch.bmm(onehot.transpose(1, 2), X).view(b, n_init, k, d)
        counts = onehot.sum(1).view(b, n_init, k)
        C = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], C)
    part, labels = assign(C)
    inertia = (part + xx[:, :, None]).clamp(min=0).sum(1)  # (b, r)
    best = inertia.argmin(1)
    return labels[torch.arange(b, device=dev), :, best]


# ============================================================================ estimating K
def estimate_n_clusters(
    pcs: np.ndarray,
    *,
    method: str = "silhouette",
    k_min: int = 2,
    k_max: int = 20,
    seed: int = 0,
    n_init: int = 10,
    n_neighbors: int = 15,
    max_cells: int = 5000,
) -> tuple[int, dict[int, float]]:
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
