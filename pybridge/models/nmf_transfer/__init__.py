"""NMF transfer clustering (Mieth et al., "TransferCluster"), its SC3 step, KTA and the paper's simulator.

See :mod:`pybridge.models.nmf_transfer._model` for the method and its choices.
"""

from ._model import DEFAULT_THETAS, MODES, NMFTransfer, NMFTransferConfig, run_nmf_transfer
from ._nmf import DataOperator, MixedTarget, SourceDictionary, enet_nmf, enet_objective, nnls_coef
from ._sc3 import estimate_k, kernel_target_alignment, sc3
from ._simulate import PAPER_TREE, simulate, simulate_transfer

__all__ = [
    "DEFAULT_THETAS",
    "DataOperator",
    "MODES",
    "MixedTarget",
    "NMFTransfer",
    "NMFTransferConfig",
    "PAPER_TREE",
    "SourceDictionary",
    "enet_nmf",
    "enet_objective",
    "estimate_k",
    "kernel_target_alignment",
    "nnls_coef",
    "run_nmf_transfer",
    "sc3",
    "simulate",
    "simulate_transfer",
]
