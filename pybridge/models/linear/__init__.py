"""Linear annotator: L2-regularised multinomial logistic regression on log-CPM (the model class behind CellTypist).

See :mod:`pybridge.models.linear._model` for the method and how it differs from a plain scikit-learn fit.
"""

from ._model import Linear, LinearConfig
from ._module import LinearClassifier, penalised_cross_entropy, sparse_csr
from ._preprocess import select_genes

__all__ = ["Linear", "LinearClassifier", "LinearConfig", "penalised_cross_entropy", "select_genes", "sparse_csr"]
