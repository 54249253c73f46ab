"""Input validation shared by every method.

Each check raises ``ValueError`` with a message that says what is wrong and
how to fix it. Matrices are returned as CSR float32 without densifying.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..rejection import UNASSIGNED


def _examples(values, n: int = 5) -> str:
    values = list(dict.fromkeys(map(str, values)))
    head = ", ".join(repr(v) for v in values[:n])
    return head + (", ..." if len(values) > n else "")


class InputTypeError(TypeError, ValueError):
    """Something other than an AnnData where one is needed (a ``TypeError`` that is also a ``ValueError``)."""


def check_anndata(obj, what: str) -> None:
    """Refuse anything but an AnnData (views and backed objects included), saying how to make one."""
    import anndata as ad

    if isinstance(obj, ad.AnnData):
        return
    kind = "None" if obj is None else type(obj).__name__
    if isinstance(obj, (list, tuple)):
        hint = (
            "pass one AnnData; to use several, join them with anndata.concat([...], label='batch') "
            "(scNym can then take the column as domain_key)"
        )
    elif isinstance(obj, (str, bytes, os.PathLike)):
        hint = (
            "read the file first: anndata.read_h5ad(path), or pybridge.r.read_rds(path) for a Seurat or "
            "SingleCellExperiment .rds (the command line takes paths)"
        )
    elif isinstance(obj, pd.DataFrame):
        hint = "wrap it: anndata.AnnData(df), with cells as rows and genes as columns (raw counts)"
    elif isinstance(obj, np.ndarray) or sp.issparse(obj):
        hint = (
            "wrap it with its names: anndata.AnnData(X, obs=pd.DataFrame(index=cells), "
            "var=pd.DataFrame(index=genes)); genes are matched by name"
        )
    elif hasattr(obj, "mod") and isinstance(getattr(obj, "mod"), dict):
        hint = "pass its RNA modality, e.g. mdata.mod['rna']"
    else:
        hint = "pass an anndata.AnnData with raw counts in .X or a layer"
    raise InputTypeError(f"The {what} must be an AnnData (cells x genes), not {kind}; {hint}.")


def check_names(adata, what: str) -> None:
    """Refuse non-AnnData input, empty objects and duplicated cell or gene names."""
    check_anndata(adata, what)
    if adata.n_obs == 0:
        raise ValueError(f"The {what} has no cells (0 observations); pass a non-empty object.")
    if adata.n_vars == 0:
        raise ValueError(f"The {what} has no genes (0 variables); pass a non-empty object.")
    dup_genes = adata.var_names[adata.var_names.duplicated()]
    if len(dup_genes):
        raise ValueError(
            f"The {what} has {len(dup_genes)} duplicated gene names ({_examples(dup_genes)}). "
            "Make them unique first, e.g. adata.var_names_make_unique() in Python or "
            "make.unique(rownames(x)) in R."
        )
    dup_cells = adata.obs_names[adata.obs_names.duplicated()]
    if len(dup_cells):
        raise ValueError(
            f"The {what} has {len(dup_cells)} duplicated cell names ({_examples(dup_cells)}). "
            "Make them unique first, e.g. adata.obs_names_make_unique()."
        )


def _raw_matrix(adata, layer: str | None, what: str):
    """The matrix in ``X`` or ``layer`` (not converted) and a name for messages."""
    if layer is None:
        X = adata.X
        where = f"{what}.X"
    else:
        if layer not in adata.layers:
            raise ValueError(
                f"Layer {layer!r} is not in the {what}; available layers: "
                f"{_examples(adata.layers.keys()) or 'none'} (use layer=None for .X)."
            )
        X = adata.layers[layer]
        where = f"{what}.layers[{layer!r}]"
    if X is None:
        raise ValueError(f"{where} is empty (None); put raw counts in .X or name a layer.")
    if hasattr(X, "to_memory"):  # backed / lazy arrays
        X = X.to_memory()
    return X, where


def _check_values(data: np.ndarray, where: str) -> None:
    """Finite and non-negative (``data``: the stored values of a sparse matrix, or a dense array)."""
    if data.dtype == bool:
        return
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ValueError(f"{where} is not a real numeric matrix (dtype {data.dtype}); pass raw counts.")
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.all():
            n_bad = int(data.size - finite.sum())
            raise ValueError(
                f"{where} contains {n_bad} NaN or infinite values; pybridge needs finite, "
                "non-negative counts. Replace or remove them first."
            )
    if data.size and data.min() < 0:
        raise ValueError(
            f"{where} contains negative values (min {data.min():.3g}); pybridge expects raw, "
            "non-negative counts. Scaled or centred data (e.g. Seurat's scale.data) cannot be used."
        )
    if not np.any(data):
        raise ValueError(f"{where} holds no counts (every value is 0); pass the raw count matrix.")


def check_counts(adata, layer: str | None = None, *, what: str = "query") -> None:
    """Validate names and values without converting the matrix (a pre-flight check before training)."""
    check_names(adata, what)
    X, where = _raw_matrix(adata, layer, what)
    _check_values(X.data if sp.issparse(X) else np.asarray(X), where)


def get_counts(adata, layer: str | None = None, *, what: str = "query") -> sp.csr_matrix:
    """Return the count matrix (cells x genes) as CSR float32, validated.

    Sparse input stays sparse; a dense array is converted to CSR once.
    Non-integer values that look like counts (max >= 30: estimated counts from
    RSEM/Salmon, ambient-corrected counts, CPM) are accepted without a warning,
    since every method normalises per cell; non-integer values below 30 look
    log-transformed and warn.
    """
    check_names(adata, what)
    X, where = _raw_matrix(adata, layer, what)
    raw = X.data if sp.issparse(X) else np.asarray(X)
    _check_values(raw, where)  # before the float32 cast, which would turn huge values into inf
    with np.errstate(over="ignore"):
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=np.float32)
        else:
            X = sp.csr_matrix(np.asarray(X).astype(np.float32, copy=False))
    data = X.data
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{where} holds values too large for float32 (max {raw.max():.3g}); pass raw counts.")
    if data.size and data.max() < 30 and np.any(np.abs(data - np.round(data)) > 1e-3):
        others = [k for k in adata.layers.keys() if k != layer and "count" in str(k).lower()]
        hint = (
            f"The {what} has a layer {others[0]!r}: if it holds the raw counts, name it as the layer to use."
            if others
            else "Pass the counts layer if you have it."
        )
        warnings.warn(
            f"{where} looks log-transformed or normalised (non-integer, max {data.max():.3g}); "
            f"pybridge normalises internally and expects raw counts. {hint}",
            UserWarning,
            stacklevel=3,
        )
    X.sum_duplicates()
    X.eliminate_zeros()
    return X


def get_labels(adata, labels_key: str, *, what: str = "reference") -> np.ndarray:
    """Return labels as an object array of strings; NA stays None.

    An empty or blank label ("" or spaces, as CSV files and spreadsheets write a missing value) counts as NA.
    Raises when the column is missing, entirely NA, or has a single class.
    """
    if labels_key not in adata.obs.columns:
        raise ValueError(
            f"labels_key={labels_key!r} is not a column of the {what}'s cell metadata; "
            f"available columns: {_examples(adata.obs.columns, 12) or 'none'}."
        )
    col = adata.obs[labels_key]
    raw = col.tolist()
    na = pd.isna(col).to_numpy() | np.array([isinstance(v, str) and not v.strip() for v in raw], dtype=bool)
    if na.all():
        raise ValueError(f"The {what} label column {labels_key!r} is entirely NA or empty.")
    values = np.array([None if m else str(v) for v, m in zip(raw, na)], dtype=object)
    classes = pd.unique(values[~na])
    if UNASSIGNED in set(classes):
        warnings.warn(
            f"The {what} label column {labels_key!r} has a class named {UNASSIGNED!r}, the label pybridge gives "
            "cells it rejects; in the output the two cannot be told apart. Rename that class or drop its cells.",
            UserWarning,
            stacklevel=3,
        )
    similar = _near_duplicates(classes)
    if similar:
        pairs = "; ".join(" vs ".join(repr(c) for c in group) for group in similar[:3])
        warnings.warn(
            f"The {what} label column {labels_key!r} has classes that differ only in case or spacing "
            f"({pairs}); they are trained as different cell types. Merge them first if they are the same type.",
            UserWarning,
            stacklevel=3,
        )
    if len(classes) < 2:
        raise ValueError(
            f"The {what} label column {labels_key!r} has a single class ({classes[0]!r}); "
            "a classifier needs at least two cell types."
        )
    return values


def _near_duplicates(classes) -> list[list[str]]:
    """Groups of class names that are the same once case and runs of spaces are ignored."""
    groups: dict[str, list[str]] = {}
    for c in classes:
        groups.setdefault(" ".join(str(c).split()).casefold(), []).append(str(c))
    return [g for g in groups.values() if len(g) > 1]


def check_finite_labels(labels: np.ndarray, what: str = "reference") -> np.ndarray:
    """Mask of labelled cells; warns when some labels are NA."""
    mask = np.array([v is not None for v in labels])
    if not mask.all():
        warnings.warn(
            f"{(~mask).sum()} {what} cells have no label (NA or empty) and are not used as labelled training data.",
            UserWarning,
            stacklevel=3,
        )
    return mask
