"""Tensor-only pieces of the transfer: a cells x genes data operator, elastic-net
NMF by coordinate descent, non-negative least squares on a fixed dictionary,
and the Gram matrices of the mixed target.

Orientation. The paper factorises genes x cells data as X ~ H W with the
dictionary H (genes x k) and the data matrix W (k x cells). pybridge stores
cells x genes, so here X ~ A B with ``coef`` A = W^T (cells x k) and
``dictionary`` B = H^T (k x genes). The objective is symmetric in the two
factors, so nothing else changes.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn

#: Above this fraction of non-zeros a matrix is kept dense on the device: torch's
#: CSR layout costs 12 bytes per stored value (float32 + int64 column index), a
#: dense array 4 bytes per entry, so beyond 1/3 dense is also the smaller one.
DENSE_ABOVE = 1.0 / 3.0


def _torch_csr(X: sp.csr_matrix, device, dtype) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(X.indptr.astype(np.int64)),
            torch.from_numpy(X.indices.astype(np.int64)),
            torch.from_numpy(X.data.astype(np.float32 if dtype == torch.float32 else np.float64)),
            size=X.shape,
            check_invariants=False,
        ).to(device)


class DataOperator:
    """Products with a fixed cells x genes matrix ``X`` on a device.

    Sparse input stays sparse on the device (torch CSR for ``X`` and ``X^T``)
    unless more than :data:`DENSE_ABOVE` of the entries are non-zero, where a
    dense array takes less memory than CSR. The Gram matrix ``X X^T`` is built
    from dense blocks of at most ``block`` genes.
    """

    def __init__(self, X: sp.csr_matrix, device: torch.device, dtype=torch.float32, block: int = 2048):
        X = sp.csr_matrix(X)
        self.shape = X.shape
        self.device, self.dtype, self.block = device, dtype, int(block)
        self._X = X
        n, g = X.shape
        self.dense = X.nnz > DENSE_ABOVE * max(n * g, 1)
        np_dtype = np.float32 if dtype == torch.float32 else np.float64
        if self.dense:
            self.M = torch.from_numpy(X.toarray().astype(np_dtype, copy=False)).to(device)
            self.Mt = None
        else:
            self.M = _torch_csr(X, device, dtype)
            self.Mt = _torch_csr(X.T.tocsr(), device, dtype)
        self.sq_norm = float(np.sum(X.data.astype(np.float64) ** 2))
        self.row_sums = torch.as_tensor(np.asarray(X.sum(axis=1)).ravel(), dtype=dtype, device=device)

    def matmul(self, M: torch.Tensor) -> torch.Tensor:
        """``X @ M`` for a dense genes x r ``M``."""
        return self.M @ M

    def rmatmul(self, M: torch.Tensor) -> torch.Tensor:
        """``X^T @ M`` for a dense cells x r ``M``."""
        return self.M.T @ M if self.dense else self.Mt @ M

    def rows(self, idx: np.ndarray) -> torch.Tensor:
        """Dense rows ``idx`` (a minibatch of cells)."""
        if self.dense:
            return self.M[torch.as_tensor(idx, device=self.device)]
        rows = self._X[idx].toarray()
        return torch.from_numpy(rows.astype(np.float32 if self.dtype == torch.float32 else np.float64)).to(self.device)

    def gram(self) -> torch.Tensor:
        """``X X^T`` (cells x cells), accumulated over dense gene blocks, in float64."""
        n, g = self.shape
        G = torch.zeros((n, n), dtype=torch.float64, device=self.device)
        if self.dense:
            for s in range(0, g, self.block):
                b = self.M[:, s : s + self.block].to(torch.float64)
                G += b @ b.T
            return G
        Xc = self._X.tocsc()
        for s in range(0, g, self.block):
            blk = Xc[:, s : s + self.block]
            if blk.nnz == 0:
                continue
            b = torch.from_numpy(blk.toarray().astype(np.float64)).to(self.device)
            G += b @ b.T
        return G


# ---------------------------------------------------------------------------- coordinate descent
def _cd_sweep(F: torch.Tensor, FtF: torch.Tensor, XF: torch.Tensor, order) -> float:
    """One coordinate-descent sweep over the columns of ``F`` (in place).

    Minimises ``0.5 ||X - F G||^2`` + penalties in ``F`` with the other factor
    fixed, where ``FtF`` = G G^T + l2 I and ``XF`` = X G^T - l1 are supplied.
    All entries of a column are independent given the other columns, so
    updating a column at once is the same as scikit-learn's element-wise
    ``cd`` solver. Returns the summed projected-gradient violation before the
    update (scikit-learn's stopping statistic).
    """
    violation = F.new_zeros(())
    for t in order:
        grad = F @ FtF[:, t] - XF[:, t]
        col = F[:, t]
        pg = torch.where(col == 0, grad.clamp(max=0), grad)
        violation = violation + pg.abs().sum()
        hess = FtF[t, t]
        if hess != 0:
            F[:, t] = (col - grad / hess).clamp_(min=0)
    return float(violation)


def enet_objective(
    op: DataOperator, A: torch.Tensor, Bt: torch.Tensor, alpha: float, l1_ratio: float, cross: float | None = None
) -> float:
    """0.5||X - A B||^2 + alpha l1 (|A|_1 + |B|_1) + 0.5 alpha (1 - l1)(||A||^2 + ||B||^2).

    ``cross`` = tr(A^T X B^T) when the caller already has it (saves a pass over X).
    """
    A64, B64 = A.double(), Bt.double()
    if cross is None:
        cross = float((op.matmul(Bt).double() * A64).sum())
    fit = op.sq_norm - 2.0 * cross + float(((A64.T @ A64) * (B64.T @ B64)).sum())
    l1 = float(A64.abs().sum() + B64.abs().sum())
    l2 = float((A64 * A64).sum() + (B64 * B64).sum())
    return 0.5 * fit + alpha * l1_ratio * l1 + 0.5 * alpha * (1.0 - l1_ratio) * l2


def enet_nmf(
    op: DataOperator,
    A: torch.Tensor,
    Bt: torch.Tensor,
    *,
    alpha: float,
    l1_ratio: float,
    max_iter: int,
    tol: float,
    update_coef: bool = True,
    update_dictionary: bool = True,
    generator: torch.Generator | None = None,
    bar=None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Elastic-net NMF of ``X ~ A B`` by cyclic coordinate descent.

    The penalty is the unscaled one of the paper (and of scikit-learn < 1.0):
    ``alpha * l1_ratio`` on the L1 norms and ``alpha * (1 - l1_ratio)`` on half
    the squared Frobenius norms of *both* factors. In scikit-learn >= 1.0 this
    is ``alpha_W = alpha / n_features`` and ``alpha_H = alpha / n_samples``.
    Each iteration updates ``A`` (cells x k) then ``B^T`` (genes x k); it stops
    when the projected-gradient violation falls below ``tol`` times that of the
    first iteration (scikit-learn's rule). With a ``generator`` the component
    order is shuffled every sweep (scikit-learn's ``shuffle=True``).
    Returns the factors and ``{"n_iter", "objective": [...], "converged"}``.
    """
    A, Bt = A.clone(), Bt.clone()
    k = A.shape[1]
    l1, l2 = alpha * l1_ratio, alpha * (1.0 - l1_ratio)
    eye = torch.eye(k, dtype=A.dtype, device=A.device)
    objective, violation_init, converged, it = [], None, False, 0

    def order():
        if generator is None:
            return range(k)
        return torch.randperm(k, generator=generator, device=generator.device).tolist()

    for it in range(1, max_iter + 1):
        violation = 0.0
        if update_coef:
            XBt = op.matmul(Bt)
            violation += _cd_sweep(A, Bt.T @ Bt + l2 * eye, XBt - l1, order())
            cross = float((XBt.double() * A.double()).sum())
        if update_dictionary:
            XtA = op.rmatmul(A)
            violation += _cd_sweep(Bt, A.T @ A + l2 * eye, XtA - l1, order())
            cross = float((XtA.double() * Bt.double()).sum())
        objective.append(enet_objective(op, A, Bt, alpha, l1_ratio, cross))
        if bar is not None:
            bar.update(1)
        if violation_init is None:
            violation_init = violation
        if violation_init == 0 or violation / violation_init <= tol:
            converged = True
            break
    return A, Bt, {"n_iter": it, "objective": objective, "converged": converged}


def nndsvdar(
    op: DataOperator, k: int, generator: torch.Generator, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVD start (Boutsidis & Gallopoulos) with zeros filled by small random values ('nndsvdar').

    The rank-k SVD is exact, from the eigenvectors of the cells x cells Gram matrix.
    """
    n, g = op.shape
    G = op.gram()
    vals, vecs = torch.linalg.eigh(G)
    idx = torch.argsort(vals, descending=True)[:k]
    S = vals[idx].clamp(min=0).sqrt()
    U = vecs[:, idx].to(op.dtype)
    V = (op.rmatmul(U) / S.clamp(min=1e-12).to(op.dtype)).T  # k x genes
    A = torch.zeros((n, k), dtype=op.dtype, device=op.device)
    B = torch.zeros((k, g), dtype=op.dtype, device=op.device)
    # the sign of a singular pair is arbitrary: fix it so the largest |entry| of u is positive
    for j in range(k):
        u, v = U[:, j], V[j]
        if u[u.abs().argmax()] < 0:
            u, v = -u, -v
        s = float(S[j])
        if j == 0:
            A[:, 0], B[0] = math.sqrt(s) * u.abs(), math.sqrt(s) * v.abs()
            continue
        up, un, vp, vn = u.clamp(min=0), (-u).clamp(min=0), v.clamp(min=0), (-v).clamp(min=0)
        mp, mn = float(up.norm() * vp.norm()), float(un.norm() * vn.norm())
        if mp > mn:
            uu, vv, sigma = up / max(float(up.norm()), 1e-12), vp / max(float(vp.norm()), 1e-12), mp
        else:
            uu, vv, sigma = un / max(float(un.norm()), 1e-12), vn / max(float(vn.norm()), 1e-12), mn
        lbd = math.sqrt(s * sigma)
        A[:, j], B[j] = lbd * uu, lbd * vv
    A[A < eps], B[B < eps] = 0, 0
    avg = float(op.row_sums.sum()) / (n * g)  # mean of X, as scikit-learn's nndsvdar
    for M in (A, B):
        zero = M == 0
        fill = torch.randn(M.shape, generator=generator, device=generator.device, dtype=M.dtype).to(M.device)
        M[zero] = (avg * fill[zero] / 100).abs()
    return A, B.T.contiguous()


# ---------------------------------------------------------------------------- target on a fixed dictionary
def nnls_coef(
    op: DataOperator, Bt: torch.Tensor, *, max_iter: int = 1000, tol: float = 1e-6
) -> tuple[torch.Tensor, dict]:
    """argmin_{A >= 0} 0.5 ||X - A B||^2 for a fixed dictionary (cells x k), exactly.

    The problem is convex and separates over cells; cyclic coordinate descent
    (exact minimisation over one column at a time) converges to the global
    optimum. It starts from zero and stops when the projected-gradient
    violation falls below ``tol`` times the first sweep's.
    """
    n, k = op.shape[0], Bt.shape[1]
    XBt = op.matmul(Bt)
    BBt = Bt.T @ Bt
    A = torch.zeros((n, k), dtype=Bt.dtype, device=Bt.device)
    v0, it = None, 0
    for it in range(1, max_iter + 1):
        v = _cd_sweep(A, BBt, XBt, range(k))
        v0 = v if v0 is None else v0
        if v0 == 0 or v / v0 <= tol:
            break
    return A, {"n_iter": it, "solver": "cd"}


def multiplicative_coef(
    op: DataOperator, Bt: torch.Tensor, generator: torch.Generator, *, max_iter: int = 100, rel_err: float = 1e-3
) -> tuple[torch.Tensor, dict]:
    """The authors' solver: Lee-Seung multiplicative updates from |N(0, 1)| (floored at 1e-10).

    Stops when the mean absolute reconstruction error changes by at most
    ``rel_err`` (relative) without increasing, or after ``max_iter`` updates.
    The mean absolute error needs dense rows, so it is computed over blocks of cells.
    """
    n, k = op.shape[0], Bt.shape[1]
    XBt = op.matmul(Bt)
    BBt = Bt.T @ Bt
    A = torch.randn((n, k), generator=generator, device=generator.device, dtype=Bt.dtype).abs().to(Bt.device)
    A.clamp_(min=1e-10)

    def mae(A_):
        tot = 0.0
        for s in range(0, n, 1024):
            idx = np.arange(s, min(s + 1024, n))
            tot += float((op.rows(idx) - A_[s : s + len(idx)] @ Bt.T).abs().sum())
        return tot / (n * op.shape[1])

    err, it = mae(A), 0
    for it in range(1, max_iter + 1):
        denom = A @ BBt
        if bool((denom == 0).any()):
            raise ValueError(
                "Multiplicative NNLS update divided by zero: the source dictionary has an empty component."
            )
        A = A * XBt / denom
        new = mae(A)
        if new <= err and abs(err - new) / max(err, 1e-30) <= rel_err:
            err = new
            break
        err = new
    return A, {"n_iter": it, "solver": "multiplicative"}


class SourceDictionary(nn.Module):
    """The transferable part of the source factorisation: a (k x genes) non-negative dictionary."""

    def __init__(self, dictionary: torch.Tensor):
        super().__init__()
        self.register_buffer("dictionary", dictionary)

    @property
    def n_components(self) -> int:
        return int(self.dictionary.shape[0])

    def reconstruction(self, assign: torch.Tensor) -> torch.Tensor:
        """H_src W' for binarised assignments: row i is the dictionary row of ``assign[i]``."""
        return self.dictionary[assign]


# ---------------------------------------------------------------------------- the mixed target
class MixedTarget:
    """X_new(theta) = theta * H_src W' + (1 - theta) * X_trg, kept implicit.

    Everything SC3 and KTA need is built from small precomputed pieces, so the
    dense cells x genes mixture is never formed: the Gram matrix
    ``X_new X_new^T = t^2 R R^T + t(1-t)(R X^T + X R^T) + (1-t)^2 X X^T`` with
    ``R = H_src W'`` needs only ``X X^T``, ``X B^T`` and ``B B^T``. Dense rows
    (for rank correlations) are produced in blocks of cells.
    """

    def __init__(self, op: DataOperator, Bt: torch.Tensor | None = None, assign: torch.Tensor | None = None):
        self.op = op
        self.n, self.n_genes = op.shape
        self.G = op.gram()
        self.Bt, self.assign = Bt, assign
        if Bt is not None:
            a = assign
            self.XBt = op.matmul(Bt).to(torch.float64)
            BBt = Bt.T.to(torch.float64) @ Bt.to(torch.float64)
            self.RRt = BBt[a][:, a]
            self.RXt = self.XBt[:, a].T.contiguous()  # (R X^T)_ij = B[a_i] . x_j
            self.sB = Bt.to(torch.float64).sum(0)[a]
        self.sX = op.row_sums.to(torch.float64)

    def gram(self, theta: float) -> torch.Tensor:
        if theta == 0 or self.Bt is None:
            return self.G
        t = float(theta)
        return t * t * self.RRt + t * (1 - t) * (self.RXt + self.RXt.T) + (1 - t) ** 2 * self.G

    def row_sums(self, theta: float) -> torch.Tensor:
        if theta == 0 or self.Bt is None:
            return self.sX
        return float(theta) * self.sB + (1 - float(theta)) * self.sX

    def rows(self, idx: np.ndarray, theta: float) -> torch.Tensor:
        return mixed_rows(self.op, self.Bt, self.assign, idx, theta)


def mixed_rows(
    op: DataOperator, Bt: torch.Tensor | None, assign: torch.Tensor | None, idx: np.ndarray, theta: float
) -> torch.Tensor:
    """Dense rows ``idx`` of X_new(theta) (without forming the Gram matrix that :class:`MixedTarget` needs)."""
    x = op.rows(idx)
    if theta == 0 or Bt is None:
        return x
    a = assign[torch.as_tensor(idx, device=assign.device)]
    return float(theta) * Bt.T[a] + (1 - float(theta)) * x
