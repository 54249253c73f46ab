"""The linear classifier and its objective: tensors in, tensors out.

Rows may be dense or a sparse CSR tensor. For a sparse design matrix the
weight gradient ``X^T G`` is computed from a second CSR tensor holding ``X^T``
(autograd through ``X @ W^T`` would transpose the CSR matrix at every backward
pass, which is slow), so the whole matrix is never densified.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F


def sparse_csr(X: sp.csr_matrix, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor on ``device`` (32-bit indices where they fit)."""
    X = sp.csr_matrix(X)
    idx = torch.int32 if X.nnz < 2**31 - 1 and max(X.shape) < 2**31 - 1 else torch.int64
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the operations used here are stable
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(
            torch.from_numpy(np.asarray(X.indptr)).to(idx),
            torch.from_numpy(np.asarray(X.indices)).to(idx),
            torch.from_numpy(np.asarray(X.data)).to(dtype),
            size=X.shape,
            device=device,
            check_invariants=False,  # scipy's CSR is valid (sorted, in-range indices)
        )


class _SparseRowsTimesWeight(torch.autograd.Function):
    """``X @ W^T`` for a sparse CSR ``X``; the gradient of ``W`` is ``(X^T @ G)^T`` with ``X^T`` given as CSR."""

    @staticmethod
    def forward(ctx, x, x_t, weight):
        ctx.save_for_backward(weight)
        ctx.x_t = x_t
        return x @ weight.t()

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        grad_w = None
        if ctx.needs_input_grad[2]:
            grad_w = (ctx.x_t @ grad).t().to(weight.dtype)
        return None, None, grad_w


class LinearClassifier(nn.Module):
    """Multinomial logistic regression: one ``nn.Linear(genes, classes)``; ``forward`` returns logits.

    Weights and bias start at zero (as scikit-learn's L-BFGS solver starts).
    """

    def __init__(self, n_genes: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(n_genes, n_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor, x_t: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of rows ``x`` (dense, or sparse CSR with ``x_t`` = its transpose as CSR when training)."""
        if x.layout != torch.sparse_csr:
            return self.linear(x)
        w, b = self.linear.weight, self.linear.bias
        if x_t is None or not w.requires_grad:
            return x @ w.t() + b
        return _SparseRowsTimesWeight.apply(x, x_t, w) + b


def penalised_cross_entropy(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, C: float) -> torch.Tensor:
    """scikit-learn's L2 logistic objective divided by the number of cells n:
    ``mean cross-entropy + ||W||^2 / (2 C n)`` (the bias is not penalised)."""
    n = logits.shape[0]
    return F.cross_entropy(logits, y) + weight.pow(2).sum() / (2.0 * C * n)
