"""ItClust preprocessing, applied to the source and the target separately.

1. cells with fewer than ``min_genes`` expressed genes are not used for training
   (``"auto"``: see :func:`resolve_min_genes`); they are still scaled and assigned;
2. genes expressed in fewer than ``min_cells`` (used) cells and ERCC / MT genes are removed;
3. each cell is scaled to ``target_sum`` counts (1e4 in the paper; ``None`` =
   the dataset's median library size, as the reference code does);
4. target only: highly variable genes by Seurat-style binned dispersion on the
   normalised (not yet logged) counts;
5. ``log1p``;
6. a per-gene z-score within the dataset, clipped to ``[-clip, clip]``.

Steps 1-5 keep the matrix sparse. The z-score is only applied to dense
minibatches (:class:`ScaledRows`), so nothing is densified as a whole.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ...data import ZScore, column_mean_sd, densify, iter_dense, normalize_total, seurat_dispersion_hvg

#: Gene name prefixes removed in step 2 (compared upper-case, so mouse ``mt-`` genes go too).
SPECIAL_PREFIXES = ("ERCC", "MT-")


#: The paper's cell filter: at least this many expressed genes (of a whole transcriptome).
PAPER_MIN_GENES = 100
#: ``min_genes="auto"`` asks for this share of the dataset's genes, at most PAPER_MIN_GENES.
AUTO_MIN_GENES_FRACTION = 0.01


def resolve_min_genes(min_genes, n_genes: int) -> int:
    """The cell-filter threshold for a dataset with ``n_genes`` genes.

    An integer is used as given. ``"auto"`` keeps the paper's 100 expressed genes
    for whole-transcriptome matrices (>= 10,000 genes) and asks for 1 % of the
    genes below that, e.g. 20 of a 2000-gene panel or HVG subset: the filter is
    meant to remove near-empty cells, and a cell of a 2000-gene panel that
    detects 60 of them is not one (docs/methods/itclust.md has what the fixed
    100 does to a 2000-gene file).
    """
    if min_genes == "auto":
        return int(min(PAPER_MIN_GENES, math.ceil(AUTO_MIN_GENES_FRACTION * n_genes)))
    return int(min_genes)


def n_hvg_for(n_cells: int) -> int:
    """The reference code's rule for how many target HVGs to use."""
    if n_cells <= 1500:
        return 500
    if n_cells <= 3000:
        return 1000
    return 2000


def merge_case(X: sp.csr_matrix, genes, upper: bool) -> tuple[sp.csr_matrix, pd.Index]:
    """Upper-case gene names (case-insensitive matching); columns that collide are summed."""
    genes = pd.Index(genes).astype(str)
    if not upper:
        return X, genes
    up = genes.str.upper()
    if not up.duplicated().any():
        return X, pd.Index(up)
    codes, uniques = pd.factorize(up)
    sel = sp.csr_matrix(
        (np.ones(len(codes), dtype=X.dtype), (np.arange(len(codes)), codes)), shape=(len(codes), len(uniques))
    )
    out = (X @ sel).tocsr()
    out.sort_indices()
    return out, pd.Index(uniques)


@dataclass
class Prepared:
    """One dataset after steps 1-5: log-normalised counts of all input cells."""

    X: sp.csr_matrix  # cells x kept genes, log1p(normalised counts)
    genes: pd.Index  # kept genes (upper-cased when matching is case-insensitive)
    used: np.ndarray  # cells passing the min_genes filter
    hvg: pd.Index | None  # target HVGs
    target_sum: float
    min_genes: int = 0  # the threshold applied (``cfg.min_genes`` resolved for this dataset)


def prepare(X: sp.csr_matrix, genes, cfg, *, hvg: bool, what: str) -> Prepared:
    """Steps 1-5 of the module docstring for one dataset (``cfg`` is an ItClustConfig)."""
    X, genes = merge_case(X, genes, cfg.case_insensitive_genes)
    n_expr = np.diff(X.indptr)
    min_genes = resolve_min_genes(cfg.min_genes, X.shape[1])
    used = n_expr >= min_genes
    if not used.any():
        raise ValueError(
            f"No cell of the {what} has at least min_genes={min_genes} expressed genes "
            f"(the most is {int(n_expr.max()) if len(n_expr) else 0}); lower min_genes, or check that the {what} "
            "holds counts for more than a handful of genes."
        )
    if used.mean() < 0.8:
        warnings.warn(
            f"{int((~used).sum())} of the {len(used)} {what} cells ({100 * (1 - used.mean()):.0f}%) have fewer than "
            f"min_genes={min_genes} expressed genes (of the {what}'s {X.shape[1]}) and are not trained on"
            + (" (they are still assigned to clusters)" if what == "query" else "")
            + '. If these cells are not empty or damaged, lower min_genes ("auto" scales it to the gene count).',
            UserWarning,
            stacklevel=3,
        )
    n_cells_per_gene = np.bincount(X[used].indices, minlength=X.shape[1])
    keep = n_cells_per_gene >= cfg.min_cells
    if cfg.drop_special_genes:
        keep &= ~np.asarray([g.upper().startswith(SPECIAL_PREFIXES) for g in genes], dtype=bool)
    if not keep.any():
        n_used = int(used.sum())
        if n_used < cfg.min_cells:
            raise ValueError(
                f"The {what} has only {n_used} usable cell(s); ItClust learns the {what}'s gene filter, HVGs and "
                f"clusters from its own cells and needs at least min_cells={cfg.min_cells} of them. Annotate a "
                "query this small with a classifier instead (scNym or JIND, or a saved model)."
            )
        raise ValueError(
            f"No gene of the {what} is expressed in at least min_cells={cfg.min_cells} of its "
            f"{n_used} usable cells; lower min_cells."
        )
    X = X[:, np.flatnonzero(keep)].tocsr()
    genes = genes[keep]
    lib = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    target_sum = float(cfg.target_sum) if cfg.target_sum is not None else float(np.median(lib[used]))
    X = normalize_total(X, target_sum, log=False)
    hv = None
    if hvg:
        n_top = cfg.n_top_genes if cfg.n_top_genes is not None else n_hvg_for(int(used.sum()))
        hv = genes[seurat_dispersion_hvg(X[used], n_top)]
    np.log1p(X.data, out=X.data)
    return Prepared(X=X, genes=genes, used=used, hvg=hv, target_sum=target_sum, min_genes=min_genes)


class ScaledRows:
    """Sparse rows that are z-scored and clipped on the device as they are densified."""

    def __init__(self, X: sp.csr_matrix, mean: np.ndarray, sd: np.ndarray, clip: float | None, device: torch.device):
        self.X = X
        self.device = device
        self._scale = ZScore(mean, sd, device, clip)

    @classmethod
    def within(cls, X: sp.csr_matrix, used: np.ndarray, clip, device) -> "ScaledRows":
        """Statistics from the ``used`` rows (the dataset itself), applied to all rows."""
        mean, sd = column_mean_sd(X[np.flatnonzero(used)])
        return cls(X, mean, sd, clip, device)

    def __len__(self) -> int:
        return self.X.shape[0]

    def rows(self, idx: np.ndarray) -> torch.Tensor:
        return self._scale(densify(self.X, idx, self.device))

    def batches(self, batch_size: int = 1024) -> Iterator[tuple[slice, torch.Tensor]]:
        for sl, xb in iter_dense(self.X, batch_size, self.device):
            yield sl, self._scale(xb)
