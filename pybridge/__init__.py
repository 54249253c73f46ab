"""pybridge: reference-based cell annotation and transfer clustering for AnnData, Seurat and SCE.

Functional API: :func:`pybridge.scnym`; estimators: :class:`pybridge.ScNym`;
any saved model: :func:`pybridge.load`.
"""

__version__ = "0.1.0"

from . import data, rejection
from ._settings import settings
from .api import cicl, itclust, jind, nmf_transfer, scnym
from .models import (
    CICL,
    JIND,
    CICLConfig,
    ItClust,
    ItClustConfig,
    JINDConfig,
    NMFTransfer,
    NMFTransferConfig,
    ScNym,
    ScNymConfig,
)
from .models._registry import load
from .result import AnnotationResult, ClusteringResult

__all__ = [
    "AnnotationResult",
    "CICL",
    "CICLConfig",
    "cicl",
    "ClusteringResult",
    "JIND",
    "JINDConfig",
    "ItClust",
    "ItClustConfig",
    "ScNym",
    "ScNymConfig",
    "data",
    "jind",
    "load",
    "nmf_transfer",
    "NMFTransfer",
    "NMFTransferConfig",
    "itclust",
    "rejection",
    "scnym",
    "settings",
    "__version__",
]
