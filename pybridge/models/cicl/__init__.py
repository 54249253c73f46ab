"""CICL: cluster-aware contrastive learning for single-cell clustering (Jiang et al.).

See :mod:`pybridge.models.cicl._model` for the method and its deviations from the paper.
"""

from .._clustering import estimate_n_clusters, kmeans, student_t
from ._model import CICL, CICLConfig
from ._module import (
    CICLEncoder,
    EncoderLayer,
    ProjectionHead,
    cluster_fne,
    cluster_supcon,
    info_nce,
    nt_xent,
    ntxent_supcon,
    similarities,
)

__all__ = [
    "CICL",
    "CICLConfig",
    "CICLEncoder",
    "EncoderLayer",
    "ProjectionHead",
    "cluster_fne",
    "cluster_supcon",
    "estimate_n_clusters",
    "info_nce",
    "kmeans",
    "nt_xent",
    "ntxent_supcon",
    "similarities",
    "student_t",
]
