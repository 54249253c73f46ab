"""JIND's gene selection, class weights and query fingerprint."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...data import column_moments


# ---------------------------------------------------------------------------- helpers
def jind_class_weights(y: np.ndarray, n_classes: int, eps: float = 0.01) -> np.ndarray:
    """``w_k = 2 / (K (eps + n_k))`` with ``n_k`` the fraction of cells of class k (the paper's Eq. 2)."""
    frac = np.bincount(np.asarray(y), minlength=n_classes) / max(len(y), 1)
    return 2.0 / (n_classes * (eps + frac))


def top_variance_genes(X_log: sp.csr_matrix, n_top: int) -> np.ndarray:
    """Sorted indices of the ``n_top`` columns with the largest variance (zero-variance columns never)."""
    _, var = column_moments(X_log, ddof=0, dtype=None)
    order = np.argsort(-var, kind="stable")
    order = order[var[order] > 0][:n_top]
    return np.sort(order)


def _fingerprint(obs_names) -> str:
    """Short hash of a query's cell names (to notice predicting with another query's alignment)."""
    import hashlib

    h = hashlib.sha1("\x00".join(map(str, obs_names)).encode("utf-8", "surrogatepass"))
    return f"{len(obs_names)}:{h.hexdigest()[:16]}"
