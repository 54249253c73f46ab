"""ItClust: iterative transfer clustering (Hu et al., Nature Machine Intelligence 2020)."""

from ._model import ItClust, ItClustConfig, ItClustResult
from ._module import ItClustNet, StackedAutoencoder, StudentTClustering, default_hidden_dims
from ._preprocess import n_hvg_for, prepare, seurat_dispersion_hvg

__all__ = [
    "ItClust",
    "ItClustConfig",
    "ItClustNet",
    "ItClustResult",
    "StackedAutoencoder",
    "StudentTClustering",
    "default_hidden_dims",
    "n_hvg_for",
    "prepare",
    "seurat_dispersion_hvg",
]
