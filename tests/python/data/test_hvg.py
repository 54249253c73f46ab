"""Seurat's vst gene ranking (scNym's n_top_genes): the loess it rests on and the ranking itself, against R."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import load

from pybridge.data import get_counts, loess_fit, seurat_vst_hvg, standardized_variance


def _r():
    try:
        import rpy2.robjects as ro
    except Exception as err:  # ImportError, or R not found by rpy2
        pytest.skip(f"rpy2/R not available: {err}")
    return ro


def _send(ro, **arrays):
    """Copy numpy arrays into R globals (copies, not numpy2ri's shared buffers, which outlive the interpreter)."""
    for name, a in arrays.items():
        a = np.asarray(a)
        ro.globalenv[name] = (ro.IntVector if a.dtype.kind in "iu" else ro.FloatVector)(a.tolist())


@pytest.mark.parametrize("max_direct", [10**6, 200])  # a fit at every point, and fits at 200 points joined
def test_loess_reproduces_a_quadratic_and_handles_ties(max_direct):
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, 3000)
    y = 1 - 0.5 * x + 0.25 * x**2
    np.testing.assert_allclose(loess_fit(x, y, 0.3, max_direct=max_direct), y, atol=1e-8)
    tied = np.repeat([0.0, 1.0, 2.0], 50)  # each window holds a single x value (a singular local fit)
    np.testing.assert_allclose(loess_fit(tied, tied * 3 + 1, 0.3), tied * 3 + 1, atol=1e-8)
    assert np.isnan(loess_fit(np.array([]), np.array([]))).size == 0


def test_loess_matches_r():
    ro = _r()
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 1, 2500)
    y = np.sin(2 * x) + rng.normal(0, 0.3, x.size)
    _send(ro, x=x, y=y)
    direct = np.array(ro.r('fitted(loess(y ~ x, span = 0.3, control = loess.control(surface = "direct")))'))
    default = np.array(ro.r("fitted(loess(y ~ x, span = 0.3))"))
    ro.r("rm(x, y)")
    np.testing.assert_allclose(loess_fit(x, y, 0.3, max_direct=10**6), direct, atol=1e-10)
    # the joined local fits are as close to R's exact fit as R's own default surface is (measured 3e-4 vs 4e-3)
    assert np.abs(loess_fit(x, y, 0.3) - direct).max() < np.abs(default - direct).max()


def test_vst_ranking_matches_seurat():
    ro = _r()
    if not ro.r('isTRUE(requireNamespace("Seurat", quietly = TRUE))')[0]:
        pytest.skip("R package Seurat not installed")
    X = get_counts(load("casi_zheng_sorted_train"))
    Xt = sp.csc_matrix(X.T, dtype=np.float64)
    _send(ro, i=Xt.indices, p=Xt.indptr, v=Xt.data, d=np.array(Xt.shape))
    theirs = np.array(
        ro.r("""
        m <- Matrix::sparseMatrix(i = i + 1, p = p, x = v, dims = d,
                                  dimnames = list(paste0("g", seq_len(d[1])), paste0("c", seq_len(d[2]))))
        Seurat::FindVariableFeatures(m, selection.method = "vst", verbose = FALSE)$vst.variance.standardized
    """)
    )
    ro.r("rm(i, p, v, d, m)")
    ours = standardized_variance(X)
    ok = np.isfinite(ours)
    assert np.array_equal(ok, theirs > 0)  # genes without variance: NaN here, 0 in Seurat
    assert np.corrcoef(ours[ok], theirs[ok])[0, 1] > 0.9999  # measured 0.99999 (R interpolates its loess)
    top = set(np.argsort(-theirs, kind="stable")[:2000])
    assert len(top & set(seurat_vst_hvg(X, 2000))) >= 1990  # measured 1997


def test_vst_needs_two_cells_and_a_variance():
    X = sp.csr_matrix(np.array([[0, 1, 5, 2], [0, 1, 0, 3], [0, 1, 2, 9]], dtype=np.float32))
    score = standardized_variance(X)
    assert np.isnan(score[:2]).all() and np.isfinite(score[2:]).all()  # a silent and a constant gene: NaN
    assert np.isnan(standardized_variance(X[:1])).all()
    assert list(seurat_vst_hvg(X, 3, finite_only=True)) == [2, 3]
    assert len(seurat_vst_hvg(X, 3)) == 3
