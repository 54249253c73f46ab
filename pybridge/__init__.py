"""pybridge: reference-based cell annotation and transfer clustering for AnnData, Seurat and SCE.

Functional API: :func:`pybridge.scnym`; estimators: :class:`pybridge.ScNym`.
"""
__version__ = "0.1.0"

from . import data, rejection
from ._settings import settings
from .api import scnym
from .api import jind
from .models import ScNym, ScNymConfig
from .models import JIND, JINDConfig
from .result import AnnotationResult, ClusteringResult

__all__ = [
    "AnnotationResult",
    "ClusteringResult",
    "JIND",
    "JINDConfig",
    "ScNym",
    "ScNymConfig",
    "data",
    "jind",
    "rejection",
    "scnym",
    "settings",
    "__version__",
]
