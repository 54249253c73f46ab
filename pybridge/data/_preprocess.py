"""Sparse-preserving normalisation helpers shared by the methods."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp


def library_size(X: sp.csr_matrix) -> np.ndarray:
    return np.asarray(X.sum(axis=1)).ravel()


def normalize_total(X: sp.csr_matrix, target_sum: float = 1e6, *, log: bool = True, base=None) -> sp.csr_matrix:
    """Scale each cell to ``target_sum`` counts, then ``log1p`` (natural log, or ``base``).

    Cells without counts stay all-zero (with a warning). The sparsity pattern
    is unchanged, so this never densifies.
    """
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    lib = library_size(X)
    empty = lib <= 0
    if empty.any():
        warnings.warn(
            f"{int(empty.sum())} cells have no counts in the genes used; they get all-zero profiles "
            "and their predictions are unreliable.",
            UserWarning,
            stacklevel=3,
        )
    scale = np.where(empty, 0.0, target_sum / np.maximum(lib, 1e-12)).astype(np.float32)
    X.data *= np.repeat(scale, np.diff(X.indptr))
    if log:
        np.log1p(X.data, out=X.data)
        if base is not None:
            X.data /= np.float32(np.log(base))
    return X


def log_cpm(X: sp.csr_matrix) -> sp.csr_matrix:
    """log(CPM + 1), natural log (scNym's input transform)."""
    return normalize_total(X, 1e6, log=True)


def hvg_by_dispersion(X_log: sp.csr_matrix, n_top: int) -> np.ndarray:
    """Indices of the ``n_top`` genes with the largest variance/mean ratio of log data.

    A simple, dependency-free highly-variable-gene rule (methods that prescribe
    a specific HVG procedure implement their own).
    """
    n_top = min(n_top, X_log.shape[1])
    mean = np.asarray(X_log.mean(axis=0)).ravel()
    sq = np.asarray(X_log.multiply(X_log).mean(axis=0)).ravel()
    var = np.maximum(sq - mean**2, 0)
    disp = np.where(mean > 0, var / np.maximum(mean, 1e-12), -np.inf)
    return np.sort(np.argsort(-disp, kind="stable")[:n_top])


def normalized_dispersion(X: sp.csr_matrix, n_bins: int = 20, *, logged: bool = False) -> np.ndarray:
    """Seurat-style normalised dispersion of each gene of normalised data ``X``.

    ``X`` is non-logged, or ``log1p`` of it with ``logged=True`` (then computed on
    ``expm1`` of a copy, as Scanpy does).

    As Scanpy's ``highly_variable_genes(flavor='seurat')``: dispersion =
    log(var / mean), genes binned into ``n_bins`` equal-width bins of
    log1p(mean), dispersions z-scored within their bin (a bin holding one gene
    gives it 1). Genes without counts, or without variance, get NaN; so does every
    gene when ``X`` has fewer than two cells (a variance needs two; the
    one-cell formula would leave rounding residue instead of 0).
    """
    if X.shape[0] < 2:
        return np.full(X.shape[1], np.nan)
    if logged:
        X = X.copy()
        X.data = np.expm1(X.data)
    n = X.shape[0]
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0), dtype=np.float64).ravel()
    var = np.maximum(sq - mean**2, 0.0) * (n / max(n - 1, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.where(mean > 0, var / np.where(mean > 0, mean, 1.0), np.nan)
        disp = np.log(np.where(disp > 0, disp, np.nan))
    frame = pd.DataFrame({"disp": disp, "bin": pd.cut(np.log1p(mean), bins=n_bins)})
    grouped = frame.groupby("bin", observed=False)["disp"]
    bin_mean = grouped.transform("mean").to_numpy()
    bin_std = grouped.transform("std").to_numpy()
    single = grouped.transform("count").to_numpy() == 1
    bin_std = np.where(single, disp, bin_std)
    bin_mean = np.where(single, 0.0, bin_mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (disp - bin_mean) / bin_std


def seurat_dispersion_hvg(X: sp.csr_matrix, n_top: int, n_bins: int = 20, *, logged: bool = False,
                          finite_only: bool = False) -> np.ndarray:
    """Indices (sorted) of the ``n_top`` genes with the highest :func:`normalized_dispersion`.

    ``X`` holds normalised data (``log1p`` of it with ``logged=True``). Genes with a NaN score come last (with
    ``finite_only=True`` they are left out, so fewer than ``n_top`` may come back); ties at the cut-off are broken
    by gene order.
    """
    norm = normalized_dispersion(X, n_bins, logged=logged)
    finite = np.isfinite(norm)
    n_top = int(min(n_top, finite.sum() if finite_only else X.shape[1]))
    order = np.argsort(-np.where(finite, norm, -np.inf), kind="stable")
    return np.sort(order[:n_top])
