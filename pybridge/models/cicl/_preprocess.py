"""CICL's preprocessing: library-size normalisation, log, top-dispersion genes, z-scores, PCA."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ...data import (
    ZScore,
    align_columns,
    column_mean_sd,
    iter_dense,
    normalize_total,
    normalized_dispersion,
    top_by_score,
)


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
    nd = normalized_dispersion(X_log, logged=True)  # Seurat's dispersion rule, as the other methods
    n_valid = int(np.isfinite(nd).sum())
    if n_valid < 10:
        raise ValueError(
            f"Only {n_valid} genes vary across cells; CICL needs at least 10 variable genes "
            "(check that X holds counts of many genes)."
        )
    keep = top_by_score(nd, n_top, finite_only=True)
    Xh = X_log[:, keep].tocsr()
    mean, std = column_mean_sd(Xh)
    return _Prep(pd.Index(genes[keep]), mean.astype(np.float32), std.astype(np.float32), target), Xh


def _apply_preprocessing(X: sp.csr_matrix, genes: pd.Index, prep: _Prep) -> sp.csr_matrix:
    """Size-factor normalise with the training median, log1p, align to the model genes (sparse)."""
    return align_columns(normalize_total(X, prep.target_sum, log=True), genes, prep.genes)


def _Scaler(prep: _Prep, device, max_value: float | None = None) -> ZScore:
    """z-scores densified minibatches on the device, clipped to [-max_value, max_value] when given."""
    return ZScore(prep.mean, prep.std, device, max_value, reciprocal=True)


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
