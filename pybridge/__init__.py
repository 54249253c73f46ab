"""pybridge: reference-based cell annotation and transfer clustering for AnnData, Seurat and SCE.

Functional API: :func:`pybridge.scnym`; estimators: :class:`pybridge.ScNym`;
any saved model: :func:`pybridge.load`.
"""

__version__ = "0.1.0"

from . import data, pl, rejection
from ._consensus import ConsensusResult, consensus
from ._settings import settings
from .api import cicl, itclust, jind, linear, nmf_transfer, scnym
from .models import (
    CICL,
    JIND,
    CICLConfig,
    ItClust,
    ItClustConfig,
    JINDConfig,
    Linear,
    LinearConfig,
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
    "consensus",
    "ConsensusResult",
    "ClusteringResult",
    "JIND",
    "JINDConfig",
    "ItClust",
    "ItClustConfig",
    "ScNym",
    "ScNymConfig",
    "data",
    "jind",
    "linear",
    "Linear",
    "LinearConfig",
    "load",
    "nmf_transfer",
    "pl",
    "NMFTransfer",
    "NMFTransferConfig",
    "itclust",
    "rejection",
    "scnym",
    "settings",
    "__version__",
]
