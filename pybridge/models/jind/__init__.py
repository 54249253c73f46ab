"""JIND: joint integration and discrimination for automated single-cell annotation (Goyal et al.).

See :mod:`pybridge.models.jind._model` for the method and its deviations from the paper.
"""

from ._model import JIND, STAGES, JINDConfig
from ._module import JINDClassifier, JINDDiscriminator, JINDEncoder, JINDGenerator
from ._preprocess import jind_class_weights, top_variance_genes

__all__ = [
    "JIND",
    "JINDClassifier",
    "JINDConfig",
    "JINDDiscriminator",
    "JINDEncoder",
    "JINDGenerator",
    "STAGES",
    "jind_class_weights",
    "top_variance_genes",
]
