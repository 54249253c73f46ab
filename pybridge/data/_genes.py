"""Gene alignment between a model (or reference) and a query.

Columns are matched by exact name. Model genes absent from the query are
zero-filled; query genes the model does not know are dropped. The overlap is
reported, a low overlap warns and a very low one is an error that points at
the usual causes (symbols vs Ensembl IDs, case, species).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Below this many shared genes, or this fraction of the model's genes, refuse to run.
MIN_SHARED_GENES = 50
MIN_SHARED_FRACTION = 0.10
#: Below this fraction, warn.
WARN_SHARED_FRACTION = 0.80


def _id_kind(names: pd.Index) -> str:
    sample = [str(n) for n in names[:200]]
    ens = sum(s.upper().startswith("ENS") for s in sample)
    return "Ensembl IDs" if ens > len(sample) / 2 else "gene symbols"


def _overlap_hint(
    model_genes: pd.Index, query_genes: pd.Index, what: str = "query", model_role: str = "reference/model"
) -> str:
    hints = []
    kq, km = _id_kind(query_genes), _id_kind(model_genes)
    if kq != km:
        hints.append(f"the {what} uses {kq} but the {model_role} uses {km}")
    upper_shared = len(set(map(str.upper, map(str, model_genes))) & set(map(str.upper, map(str, query_genes))))
    exact_shared = len(model_genes.intersection(query_genes))
    if upper_shared > 2 * max(exact_shared, 1):
        hints.append(
            f"{upper_shared} genes match when case is ignored (mouse 'Gapdh' vs human 'GAPDH'?); "
            "convert the names to one convention"
        )
    return ("; ".join(hints) + ".") if hints else "check that both use the same gene identifiers and species."


def gene_overlap(
    model_genes,
    query_genes,
    *,
    what: str = "query",
    check: bool = True,
    warn: bool = True,
    model_role: str = "reference/model",
) -> dict:
    """How many of ``model_genes`` the ``query_genes`` hold; an error below the floor, a warning below 80 %.

    ``what`` names the side whose genes are looked up and ``model_role`` the side
    whose genes are counted, in the messages.
    """
    model_genes = pd.Index(model_genes).astype(str)
    query_genes = pd.Index(query_genes).astype(str)
    shared = int(model_genes.isin(query_genes).sum())
    frac = shared / max(len(model_genes), 1)
    info = {
        "n_model_genes": int(len(model_genes)),
        f"n_{what}_genes": int(len(query_genes)),
        "n_shared": shared,
        "fraction_of_model_genes": float(frac),
    }
    if check:
        if shared < MIN_SHARED_GENES or frac < MIN_SHARED_FRACTION:
            raise ValueError(
                f"The {what} shares only {shared} of the {len(model_genes)} {model_role} genes "
                f"({100 * frac:.1f}%); at least {MIN_SHARED_GENES} genes and {100 * MIN_SHARED_FRACTION:.0f}% "
                f"are needed. Hint: {_overlap_hint(model_genes, query_genes, what, model_role)}"
            )
        if warn and frac < WARN_SHARED_FRACTION:
            warnings.warn(
                f"Only {shared} of {len(model_genes)} model genes ({100 * frac:.1f}%) are present in the {what}; "
                "the method uses the shared genes (or sets the missing ones to zero), which can lower accuracy.",
                UserWarning,
                stacklevel=3,
            )
    return info


def align_columns(X: sp.csr_matrix, genes, target_genes) -> sp.csr_matrix:
    """Reorder/zero-fill the columns of ``X`` (named ``genes``) to ``target_genes``.

    Stays sparse: implemented as a product with a 0/1 selection matrix.
    """
    genes = pd.Index(genes).astype(str)
    target_genes = pd.Index(target_genes).astype(str)
    if genes.equals(target_genes):
        return X
    pos = target_genes.get_indexer(genes)  # where each source column goes, -1 = dropped
    src = np.flatnonzero(pos >= 0)
    sel = sp.csr_matrix((np.ones(len(src), dtype=X.dtype), (src, pos[src])), shape=(len(genes), len(target_genes)))
    out = (X @ sel).tocsr()
    out.sort_indices()
    return out


def shared_genes(ref_genes, query_genes) -> pd.Index:
    """Genes present in both, in the reference's order."""
    ref_genes = pd.Index(ref_genes).astype(str)
    return ref_genes[ref_genes.isin(pd.Index(query_genes).astype(str))]
