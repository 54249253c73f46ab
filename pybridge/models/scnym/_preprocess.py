"""scNym's gene selection and domain codes."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...data import seurat_dispersion_hvg, seurat_vst_hvg


def _top_genes(Xr: sp.csr_matrix, Xq: sp.csr_matrix | None, n: int, flavor: str) -> np.ndarray:
    """Sorted column indices: the reference's ``n`` most variable genes, and with ``Xq`` also the query's.

    ``flavor="seurat_v3"`` ranks raw counts by Seurat's vst standardised variance; ``"seurat"`` ranks log-CPM
    by normalised dispersion. The query side is label-free, like Seurat's ``SelectIntegrationFeatures`` (which
    ranks each dataset's variable genes); only query genes with a finite score count, so a query too small to
    have a variance adds nothing.
    """
    rank = seurat_vst_hvg if flavor == "seurat_v3" else functools.partial(seurat_dispersion_hvg, logged=True)
    keep = rank(Xr, n)
    return keep if Xq is None else np.union1d(keep, rank(Xq, n, finite_only=True))


def _domains(reference, query, domain_key):
    """Integer domain codes for reference and query cells, and the domain names."""
    if domain_key is None:
        dom_r = np.zeros(reference.n_obs, dtype=np.int64)
        if query is None:
            return dom_r, None, ["reference"]
        return dom_r, np.ones(query.n_obs, dtype=np.int64), ["reference", "query"]
    if domain_key not in reference.obs:
        raise ValueError(f"domain_key={domain_key!r} is not a column of the reference's cell metadata.")
    names_r = reference.obs[domain_key].astype(str).to_numpy()
    if query is not None:
        names_q = (
            query.obs[domain_key].astype(str).to_numpy()
            if domain_key in query.obs
            else np.full(query.n_obs, "query", dtype=object)
        )
        # a query domain with the same name as a reference domain is still a different domain
        names_q = np.array([f"query:{n}" if n in set(names_r) else n for n in names_q], dtype=object)
    else:
        names_q = np.array([], dtype=object)
    domains = list(pd.unique(np.concatenate([names_r, names_q])))
    code = {d: i for i, d in enumerate(domains)}
    dom_r = np.array([code[d] for d in names_r], dtype=np.int64)
    dom_q = np.array([code[d] for d in names_q], dtype=np.int64) if query is not None else None
    return dom_r, dom_q, domains
