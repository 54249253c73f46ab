"""The linear annotator's optional gene selection (its input transform is :func:`pybridge.data.log_cpm`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...data import seurat_dispersion_hvg


def select_genes(X_log: sp.csr_matrix, n_top_genes: int) -> np.ndarray:
    """Sorted column indices of the ``n_top_genes`` genes of ``X_log`` (log-CPM of the labelled reference cells)
    with the highest normalised dispersion (Seurat / Scanpy ``flavor="seurat"``); genes without a finite score
    (constant ones) are left out."""
    keep = seurat_dispersion_hvg(X_log, n_top_genes, logged=True, finite_only=True)
    if len(keep) == 0:
        raise ValueError("No gene varies across the reference cells; check that the reference holds counts.")
    return keep
