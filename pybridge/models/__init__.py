"""Per-method models: torch modules, a frozen config dataclass and an estimator each."""
from .scnym import ScNym, ScNymConfig
from .jind import JIND, JINDConfig

__all__ = ["ScNym", "ScNymConfig"]
__all__ += ["JIND", "JINDConfig"]
