"""scNym: semi-supervised adversarial label transfer (Kimmel & Kelley, Genome Research 2021).

See :mod:`pybridge.models.scnym._model` for the method and its deviations from the paper.
"""

from ._model import ScNym, ScNymConfig
from ._module import DomainAdversary, ScNymNet, grad_reverse, mask_genes, ramp_weight, sharpen, soft_cross_entropy

__all__ = [
    "DomainAdversary",
    "ScNym",
    "ScNymConfig",
    "ScNymNet",
    "grad_reverse",
    "mask_genes",
    "ramp_weight",
    "sharpen",
    "soft_cross_entropy",
]
