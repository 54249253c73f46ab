"""Per-method models: torch modules, a frozen config dataclass and an estimator each, on the shared
estimator protocol (:mod:`._base`), listed in the method registry (:mod:`._registry`)."""
from ._base import Annotator, Clusterer, Estimator
from .scnym import ScNym, ScNymConfig
from .jind import JIND, JINDConfig
from .itclust import ItClust, ItClustConfig
from .cicl import CICL, CICLConfig
from .nmf_transfer import NMFTransfer, NMFTransferConfig

__all__ = ["Annotator", "Clusterer", "Estimator"]
__all__ += ["ScNym", "ScNymConfig"]
__all__ += ["JIND", "JINDConfig"]
__all__ += ["ItClust", "ItClustConfig"]
__all__ += ["CICL", "CICLConfig"]
__all__ += ["NMFTransfer", "NMFTransferConfig"]
