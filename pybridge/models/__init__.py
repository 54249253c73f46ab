"""Per-method models: torch modules, a frozen config dataclass and an estimator each, on the shared
estimator protocol (:mod:`._base`), listed in the method registry (:mod:`._registry`)."""

from ._base import Annotator, Clusterer, Estimator
from .cicl import CICL, CICLConfig
from .itclust import ItClust, ItClustConfig
from .jind import JIND, JINDConfig
from .linear import Linear, LinearConfig
from .nmf_transfer import NMFTransfer, NMFTransferConfig
from .scnym import ScNym, ScNymConfig

__all__ = ["Annotator", "Clusterer", "Estimator"]
__all__ += ["ScNym", "ScNymConfig"]
__all__ += ["JIND", "JINDConfig"]
__all__ += ["Linear", "LinearConfig"]
__all__ += ["ItClust", "ItClustConfig"]
__all__ += ["CICL", "CICLConfig"]
__all__ += ["NMFTransfer", "NMFTransferConfig"]
