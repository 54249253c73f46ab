"""Per-method models: torch modules, a frozen config dataclass and an estimator each."""
from .scnym import ScNym, ScNymConfig

__all__ = ["ScNym", "ScNymConfig"]
