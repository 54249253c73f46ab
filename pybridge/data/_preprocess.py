"""Sparse-preserving normalisation helpers shared by the methods."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch


def column_moments(X: sp.csr_matrix, *, ddof: int = 1, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and variance of a sparse matrix, from its non-zeros (never densified).

    ``ddof=1`` gives the unbiased variance, ``ddof=0`` the population one;
    ``dtype=None`` keeps the matrix's own precision for the means.
    """
    n = X.shape[0]
    mean = np.asarray(X.mean(axis=0), dtype=dtype).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0), dtype=dtype).ravel()
    var = np.maximum(sq - mean**2, 0.0)
    if ddof:
        var = var * (n / max(n - ddof, 1))
    return mean, var


def column_mean_sd(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and unbiased standard deviation (float64) for z-scores; a constant gene gets sd 1."""
    mean, var = column_moments(X)
    sd = np.sqrt(var)
    sd[sd == 0] = 1.0
    return mean, sd


class ZScore:
    """z-scores densified rows on the device, ``(x - mean) / sd``, clipped to ``[-clip, clip]`` when given.

    ``reciprocal=True`` multiplies by a precomputed ``1 / sd`` instead of
    dividing (CICL's form; the two differ in the last bit of float32).
    """

    def __init__(
        self, mean: np.ndarray, sd: np.ndarray, device, clip: float | None = None, *, reciprocal: bool = False
    ):
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.reciprocal = reciprocal
        scale = 1.0 / np.asarray(sd) if reciprocal else sd
        self.scale = torch.as_tensor(scale, dtype=torch.float32, device=device)
        self.clip = None if clip is None else float(clip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) * self.scale if self.reciprocal else (x - self.mean) / self.scale
        return z if self.clip is None else z.clamp(-self.clip, self.clip)


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
    mean, var = column_moments(X_log, ddof=0, dtype=None)
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
    mean, var = column_moments(X)
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


def seurat_dispersion_hvg(
    X: sp.csr_matrix, n_top: int, n_bins: int = 20, *, logged: bool = False, finite_only: bool = False
) -> np.ndarray:
    """Indices (sorted) of the ``n_top`` genes with the highest :func:`normalized_dispersion`.

    ``X`` holds normalised data (``log1p`` of it with ``logged=True``). Genes with a NaN score come last (with
    ``finite_only=True`` they are left out, so fewer than ``n_top`` may come back); ties at the cut-off are broken
    by gene order.
    """
    return top_by_score(normalized_dispersion(X, n_bins, logged=logged), n_top, finite_only)


def top_by_score(score: np.ndarray, n_top: int, finite_only: bool) -> np.ndarray:
    """Sorted indices of the ``n_top`` highest scores; NaN scores last (left out with ``finite_only``), ties by
    index."""
    finite = np.isfinite(score)
    n_top = int(min(n_top, finite.sum() if finite_only else len(score)))
    order = np.argsort(-np.where(finite, score, -np.inf), kind="stable")
    return np.sort(order[:n_top])


def loess_fit(
    x: np.ndarray, y: np.ndarray, span: float = 0.3, *, max_direct: int = 1000, chunk: int = 256
) -> np.ndarray:
    """Fitted values of a local quadratic regression of ``y`` on ``x``: R's ``loess(y ~ x, span = span)``.

    A local fit at a point uses its ``floor(span * n)`` nearest neighbours in ``x``, tricube-weighted by the
    distance to the farthest of them (degree 2, no robustness iterations: R's defaults). With at most
    ``max_direct`` distinct ``x`` values every point gets its own fit (R's ``surface = "direct"``); beyond that the
    local fits (value and slope) are made at ``max_direct`` points spread over the sorted ``x`` and joined by cubic
    Hermite interpolation, as R's default surface does between its k-d tree vertices. That keeps the cost linear
    in the number of points.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 4:
        return np.full(n, y.mean() if n else np.nan)
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    q = int(min(n, max(4, np.floor(span * n))))
    ux = np.unique(xs)
    at = ux if len(ux) <= max_direct else np.unique(np.quantile(xs, np.linspace(0, 1, max(max_direct, 2))))
    # the q nearest neighbours of a point are a run of the sorted x; slide the run while that brings it closer
    start = np.empty(len(at), dtype=np.int64)
    lo = 0
    for i, xi in enumerate(at):
        while lo + q < n and xs[lo + q] - xi < xi - xs[lo]:
            lo += 1
        start[i] = lo
    value, slope = np.empty(len(at)), np.empty(len(at))
    run = np.arange(q)
    for a in range(0, len(at), chunk):
        idx = np.arange(a, min(a + chunk, len(at)))
        win = start[idx, None] + run[None, :]
        d = xs[win] - at[idx, None]
        h = np.abs(d).max(axis=1, keepdims=True)
        w = (1 - np.minimum(np.abs(d) / np.where(h > 0, h, 1.0), 1.0) ** 3) ** 3
        # weighted least squares on (1, d, d^2) centred at the point: intercept = value, linear term = slope
        D = np.stack([np.ones_like(d), d, d * d], axis=2)
        WD = D * w[..., None]
        coef = np.einsum(
            "cij,cj->ci",
            np.linalg.pinv(np.einsum("cqi,cqj->cij", WD, D), rcond=1e-10),
            np.einsum("cqi,cq->ci", WD, ys[win]),
        )
        value[idx], slope[idx] = coef[:, 0], coef[:, 1]
    if at is ux:
        fitted = value[np.searchsorted(at, xs)]
    else:
        from scipy.interpolate import CubicHermiteSpline

        fitted = CubicHermiteSpline(at, value, slope)(xs)
    out = np.empty(n)
    out[order] = fitted
    return out


def standardized_variance(X: sp.csr_matrix, span: float = 0.3) -> np.ndarray:
    """Seurat's "vst" score of each gene of a raw count matrix (``FindVariableFeatures(selection.method = "vst")``,
    Scanpy's ``flavor="seurat_v3"``).

    A loess curve (``span``, degree 2) of log10(variance) on log10(mean) over the genes with a variance gives each
    gene an expected standard deviation; the score is the variance of its counts standardised by its mean and that
    deviation, with values capped at sqrt(number of cells). Genes without variance get NaN, and every gene does
    with fewer than two cells.
    """
    n, n_genes = X.shape
    if n < 2:
        return np.full(n_genes, np.nan)
    X = sp.csr_matrix(X)  # no copy of CSR input: per-gene sums come from the stored entries
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    data, genes = X.data.astype(np.float64), X.indices
    mean = np.bincount(genes, weights=data, minlength=n_genes) / n
    var = np.maximum(np.bincount(genes, weights=data * data, minlength=n_genes) - n * mean**2, 0.0) / (n - 1)
    ok = var > 0
    score = np.full(n_genes, np.nan)
    if not ok.any():
        return score
    sd = np.ones_like(mean)
    sd[ok] = np.sqrt(10 ** loess_fit(np.log10(mean[ok]), np.log10(var[ok]), span))
    z = np.minimum((data - mean[genes]) / sd[genes], np.sqrt(n))  # capped at sqrt(cells), as Seurat
    total = np.bincount(genes, weights=z * z, minlength=n_genes)
    total += (n - np.bincount(genes, minlength=n_genes)) * (mean / sd) ** 2  # zeros: (0 - mean) / sd, below the cap
    score[ok] = total[ok] / (n - 1)
    return score


def seurat_vst_hvg(X: sp.csr_matrix, n_top: int, *, span: float = 0.3, finite_only: bool = False) -> np.ndarray:
    """Indices (sorted) of the ``n_top`` genes of raw counts ``X`` with the highest :func:`standardized_variance`.

    Genes with a NaN score come last (with ``finite_only=True`` they are left out); ties broken by gene order.
    """
    return top_by_score(standardized_variance(X, span), n_top, finite_only)
