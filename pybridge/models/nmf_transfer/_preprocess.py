"""The paper's pre-processing: cell filter, gene filter, log2(x + 1), all on sparse CSR.

Mieth et al. apply the three steps to source and target *separately* and then
keep the genes both retain. The thresholds follow the authors' code
(``cell_filter`` / ``gene_filter`` in their SC3 implementation):

* cell filter: keep a cell when at least ``min_genes`` genes have a value
  ``>= threshold`` (the paper writes ">", the code ">=");
* gene filter (SC3's): keep a gene when it reaches ``>= threshold`` in at
  least ``(1 - fraction) * n`` cells (not rare) **and** is non-zero in at most
  ``fraction * n`` cells (not ubiquitous);
* log2(x + 1).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def cell_filter_mask(X: sp.csr_matrix, min_genes: int, threshold: float) -> np.ndarray:
    """Boolean mask of cells with at least ``min_genes`` values ``>= threshold``."""
    if min_genes <= 0:
        return np.ones(X.shape[0], dtype=bool)
    if threshold <= 0:  # every value (zeros included) passes
        return np.full(X.shape[0], X.shape[1] >= min_genes)
    n_expr = np.diff((X >= threshold).tocsr().indptr)
    return n_expr >= min_genes


def gene_filter_mask(X: sp.csr_matrix, threshold: float, fraction: float) -> np.ndarray:
    """SC3 gene filter: neither rare nor ubiquitous (see module docstring)."""
    n = X.shape[0]
    Xc = X.tocsc()
    nonzero = np.diff(Xc.indptr)
    if threshold > 0:
        above = np.diff((Xc >= threshold).tocsc().indptr)
    else:
        above = np.full(X.shape[1], n)
    return (above >= n * (1.0 - fraction)) & (nonzero <= n * fraction)


def log2p(X: sp.csr_matrix) -> sp.csr_matrix:
    """log2(x + 1) on the stored values (zeros stay zero, the matrix stays sparse)."""
    out = sp.csr_matrix(X, dtype=np.float32, copy=True)
    np.log2(out.data + np.float32(1.0), out=out.data)
    return out
