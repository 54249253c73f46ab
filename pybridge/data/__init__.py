"""Data handling shared by all methods: validation, gene alignment, normalisation, minibatches."""

from ._checks import (
    InputTypeError,
    check_anndata,
    check_counts,
    check_finite_labels,
    check_names,
    get_counts,
    get_labels,
)
from ._genes import align_columns, gene_overlap, shared_genes
from ._loader import InfiniteSampler, densify, epoch_batches, iter_dense
from ._preprocess import (
    ZScore,
    column_mean_sd,
    column_moments,
    hvg_by_dispersion,
    library_size,
    loess_fit,
    log_cpm,
    normalize_total,
    normalized_dispersion,
    seurat_dispersion_hvg,
    seurat_vst_hvg,
    standardized_variance,
    top_by_score,
)

__all__ = [
    "InfiniteSampler",
    "InputTypeError",
    "ZScore",
    "align_columns",
    "check_anndata",
    "check_counts",
    "check_finite_labels",
    "check_names",
    "column_mean_sd",
    "column_moments",
    "densify",
    "epoch_batches",
    "gene_overlap",
    "get_counts",
    "get_labels",
    "hvg_by_dispersion",
    "iter_dense",
    "library_size",
    "loess_fit",
    "log_cpm",
    "normalize_total",
    "normalized_dispersion",
    "seurat_dispersion_hvg",
    "seurat_vst_hvg",
    "shared_genes",
    "standardized_variance",
    "top_by_score",
]
