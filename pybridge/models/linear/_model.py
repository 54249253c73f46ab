"""Linear annotator: L2-regularised multinomial logistic regression on log-CPM.

The model class behind CellTypist and the usual first baseline for reference
annotation: one linear map from log(CPM + 1) of the genes to class logits,
probabilities by softmax. It is the bar the deep annotators must clear: a
method that does not beat it on a task adds cost without adding accuracy.

Objective, as scikit-learn's ``LogisticRegression(C=C)`` with the multinomial
loss (its formulation, divided by the number of training cells n)::

    mean_i CE(softmax(W x_i + b), y_i) + ||W||^2 / (2 C n)

with the bias unpenalised. It is minimised full-batch with L-BFGS (torch's,
strong-Wolfe line search, history 10 as scipy's default) from W = 0, b = 0,
until the largest absolute gradient entry is at most ``tol`` (scikit-learn's
``gtol``) or the loss and the step stop changing, or after ``max_iter``
iterations. The design matrix stays sparse on the device: ``X W^T`` is a
sparse CSR product, and the weight gradient uses a second CSR copy of ``X^T``.
L-BFGS runs on the objective times max(n, 10 000) (the same minimiser; the
gradient test is on the objective above): torch's L-BFGS drops curvature
pairs with ``s.y <= 1e-10``, an absolute threshold that the small gradients of
the mean objective fall below on small or ill-conditioned problems (log-CPM
features have large means), which stalls it far from the optimum.

Input: log(CPM + 1) on all of a dataset's genes (natural log), then the genes
the reference shares with the query given to ``fit`` (all of the reference's
genes without one); a later query is aligned to the model's genes, missing
ones set to 0. ``n_top_genes=N`` keeps the N reference genes of highest
normalised dispersion instead (Seurat's ``flavor="seurat"``).

Where pybridge differs from a plain scikit-learn fit (each is an option of
:class:`LinearConfig`):

* Validation cells: a stratified ``val_fraction`` (10 %) of the reference is
  held back from training; their predictions fit the temperature
  (``calibrate``) and the per-class rejection thresholds (``reject``,
  ``outlier_fraction``), as for the other annotators. Then the model is
  fitted again on every reference cell (``refit=True``), so the held-back
  cells are not lost to accuracy (small types may have only a few cells); the
  temperature and thresholds of the first fit are kept for it.
  ``refit=False`` keeps the model fitted without the validation cells;
  ``val_fraction=0`` trains once on every cell, as scikit-learn does (then no
  temperature and no thresholds are fitted).
* Calibration: the probabilities are temperature-scaled with one temperature
  fitted on the validation cells (labels do not change). ``calibrate=False``
  gives the softmax itself.
* Precision: float32 by default (half the memory of the sparse matrix);
  ``dtype="float64"`` computes in double precision as scikit-learn does.
* Stopping: besides the gradient test, L-BFGS stops when the objective
  changes by less than 64 machine epsilons in float64 (scipy's ``ftol`` for
  an objective below 1) or not at all in float32, or when the step becomes
  negligible; torch's line search tries at most 25 points (scipy's 50).

CellTypist itself differs from this model in its input (counts normalised to
10 000 per cell, log1p, then scaled per gene), its solver for large data (SGD
mini-batches) and, in its released versions, one-vs-rest rather than
multinomial fitting; ``benchmarks/peers.py`` runs it as a separate peer.

Measurements (accuracy against scikit-learn and the other methods, run time):
``docs/methods/linear.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..._io import join_states, split_state
from ..._settings import logger
from ...data import align_columns, gene_overlap, log_cpm, shared_genes
from ...train import History, Timer, make_rng, progress, seed_everything, split_indices
from .._base import Annotator
from ._module import LinearClassifier, penalised_cross_entropy, sparse_csr
from ._preprocess import select_genes

#: L-BFGS iterations between progress updates (each update costs one extra loss evaluation)
_CHUNK = 10
#: rows per block at prediction time
_PREDICT_ROWS = 8192
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class LinearConfig:
    """Linear annotator options; the defaults are scikit-learn's (see the module docstring for the differences)."""

    C: float = 1.0  # inverse L2 strength, as in scikit-learn: penalty ||W||^2 / (2 C n)
    max_iter: int = 1000  # L-BFGS iterations at most (scikit-learn's max_iter)
    tol: float = 1e-4  # stop when max |gradient| <= tol (scikit-learn's tol, scipy's gtol)
    history_size: int = 10  # L-BFGS memory (scipy's maxcor)
    dtype: str = "float32"  # "float64": double precision, as scikit-learn
    val_fraction: float = 0.1  # stratified held-back reference cells for calibration and rejection thresholds
    refit: bool = True  # then fit again on every cell, keeping the temperature and thresholds
    outlier_fraction: float = 0.05  # per-class rejection thresholds: this fraction of validation cells rejected
    reject: bool = False  # label cells below their predicted class's threshold "Unassigned"
    calibrate: bool = True  # temperature-scale the probabilities (fitted on the validation cells)
    n_top_genes: int | None = None  # None: every shared gene; N: the N most variable reference genes

    def __post_init__(self):
        if not self.C > 0:
            raise ValueError(f"C must be a positive number (the inverse regularisation strength), not {self.C}.")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, not {self.max_iter}.")
        if not self.tol > 0:
            raise ValueError(f"tol must be positive, not {self.tol}.")
        if self.history_size < 1:
            raise ValueError(f"history_size must be at least 1, not {self.history_size}.")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', not {self.dtype!r}.")
        for name in ("val_fraction", "outlier_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {getattr(self, name)}.")
        if self.n_top_genes is not None and self.n_top_genes < 10:
            raise ValueError("n_top_genes must be at least 10, or None to use every shared gene.")


class Linear(Annotator):
    """Linear annotator: ``Linear(**options).fit(reference).predict(query)``.

    Parameters
    ----------
    config
        A :class:`LinearConfig` or dict; keyword ``overrides`` replace single options.
    seed
        Seeds the split into training and validation cells (the fit itself is deterministic).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    verbose
        Show a progress bar (default: ``pybridge.settings.verbose``).

    After fitting, :attr:`coef_` (classes x genes) and :attr:`intercept_` hold the model.
    """

    method = "linear"
    config_cls = LinearConfig

    def __init__(self, config=None, *, seed=0, device="auto", verbose=None, **overrides):
        super().__init__(config, seed=seed, device=device, verbose=verbose, **overrides)
        self.net_: LinearClassifier | None = None

    @property
    def _dtype(self) -> torch.dtype:
        return _DTYPES[self.config.dtype]

    # ------------------------------------------------------------ data transform
    def _transform(self, X, genes, target_genes):
        """log(CPM + 1) on all of the dataset's genes, then aligned to ``target_genes``."""
        return align_columns(log_cpm(X), genes, target_genes)

    # ------------------------------------------------------------------- fitting
    def fit(
        self,
        reference,
        *,
        labels_key: str = "cell_type",
        layer: str | None = None,
        query=None,
        query_layer: str | None = None,
    ) -> "Linear":
        """Train on the labelled ``reference``; with a ``query``, on the genes the two share (the query's cells
        are not used)."""
        timer = Timer()
        cfg = self.config
        with timer("preprocess_s"):
            Cr, genes_r, labels, labelled = self._read_reference(reference, labels_key, layer)
            if query is not None:
                _, genes_q = self._read(query, query_layer, "query")
                genes = shared_genes(genes_r, genes_q)
                overlap = gene_overlap(genes_r, genes_q, what="query", warn=False)  # training uses the shared genes
            else:
                genes, overlap = genes_r, None
            Xr = self._transform(Cr, genes_r, genes)[np.flatnonzero(labelled)]
            labels = labels[labelled]
            if cfg.n_top_genes is not None and cfg.n_top_genes < len(genes):
                keep = select_genes(Xr, cfg.n_top_genes)
                genes, Xr = pd.Index(genes)[keep], Xr[:, keep].tocsr()
        classes = sorted(pd.unique(labels).tolist())
        y = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
        self.genes_, self.classes_ = pd.Index(genes).astype(str), classes
        with timer("train_s"):
            val_probs, val_y = self._train(Xr, y)
        self._fit_validation(val_probs, val_y)
        if cfg.refit and val_probs is not None:
            n_val = self.fit_info_["n_validation_cells"]
            with timer("refit_s"):
                self._train(Xr, y, holdout=False)
            self.fit_info_.update({"refit_on_all_cells": True, "n_validation_cells": n_val})
        self.fit_info_.update(
            {
                "n_reference_cells": int(Xr.shape[0]),
                "n_genes": int(len(genes)),
                "reference_gene_overlap": overlap,
                "timings": timer.times,
            }
        )
        return self

    def _train(self, X, y, *, holdout: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Full-batch L-BFGS on the training cells (all of them without ``holdout``); (probabilities, codes) of
        the validation cells."""
        cfg, dev, dtype = self.config, self.device, self._dtype
        seed_everything(self.seed)
        if holdout:
            train_idx, val_idx = split_indices(y, cfg.val_fraction, make_rng(self.seed))
        else:
            train_idx, val_idx = np.arange(len(y)), np.zeros(0, dtype=np.int64)
        Xt = X[train_idx]
        x, x_t = sparse_csr(Xt, dev, dtype), sparse_csr(Xt.T.tocsr(), dev, dtype)
        yt = torch.as_tensor(y[train_idx], device=dev)
        net = LinearClassifier(X.shape[1], len(self.classes_)).to(device=dev, dtype=dtype)
        # L-BFGS runs on the objective times max(n, 1e4); see the module docstring (torch's absolute s.y test)
        scale = max(float(len(train_idx)), 1e4)
        opt = torch.optim.LBFGS(
            net.parameters(),
            lr=1.0,
            max_iter=_CHUNK,
            max_eval=_CHUNK * 26 + 1,  # never binding: at most 25 line-search evaluations per iteration
            tolerance_grad=cfg.tol * scale,  # max |gradient of the mean objective| <= tol
            # float64: scipy's ftol (a change of 64 eps in an objective below 1); float32: no change at all
            tolerance_change=64 * torch.finfo(dtype).eps * scale if dtype == torch.float64 else 1e-9,
            history_size=cfg.history_size,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad(set_to_none=True)
            loss = scale * penalised_cross_entropy(net(x, x_t), yt, net.linear.weight, cfg.C)
            loss.backward()
            return loss

        history = History()
        bar = progress(cfg.max_iter, self.verbose, "linear")
        done = 0
        while done < cfg.max_iter:
            step = min(_CHUNK, cfg.max_iter - done)
            opt.param_groups[0]["max_iter"] = step
            before = opt.state[net.linear.weight].get("n_iter", 0)
            loss = float(opt.step(closure).detach()) / scale
            its = opt.state[net.linear.weight]["n_iter"] - before
            done += its
            grad = max(float(p.grad.abs().max()) for p in net.parameters() if p.grad is not None) / scale
            history.record(loss=loss, max_grad=grad, iterations=done)
            bar.update(its)
            bar.set_postfix(loss=f"{loss:.4f}", grad=f"{grad:.1e}")
            if its < step:  # L-BFGS stopped by itself: gradient below tol, or no more progress
                break
        bar.close()
        final = float(closure().detach()) / scale  # the mean objective and its gradient where L-BFGS stopped
        grad = max(float(p.grad.abs().max()) for p in net.parameters()) / scale
        net.zero_grad(set_to_none=True)
        net.eval()
        self.net_ = net
        self.history_ = history.to_dict()
        converged = grad <= cfg.tol
        self.fit_info_.update(
            {
                "iterations": int(done),
                "converged": bool(converged),
                "loss": final,
                "max_gradient": grad,
                "n_training_cells": int(len(train_idx)),
                "n_validation_cells": int(len(val_idx)),
            }
        )
        if not converged:
            logger.info(
                "linear: L-BFGS stopped after %d iterations with max |gradient| %.2e > tol %.0e%s",
                done,
                grad,
                cfg.tol,
                " (max_iter reached)" if done >= cfg.max_iter else "",
            )
        logger.info("linear: trained on %d cells x %d genes in %d iterations", len(train_idx), X.shape[1], done)
        if len(val_idx) == 0:
            return None, None
        probs, _ = self._predict_arrays(X[val_idx])
        return probs, y[val_idx]

    # ---------------------------------------------------------------- prediction
    @torch.no_grad()
    def _predict_arrays(self, X):
        """(softmax probabilities, logits) of model-ready rows ``X``; the logits are the result's embedding."""
        net = self.net_.eval()
        logits = []
        for start in range(0, X.shape[0], _PREDICT_ROWS):
            rows = sparse_csr(X[start : start + _PREDICT_ROWS], self.device, self._dtype)
            logits.append(net(rows).double().cpu())
        z = torch.cat(logits) if logits else torch.zeros((0, len(self.classes_)), dtype=torch.float64)
        return F.softmax(z, dim=1).numpy(), z.numpy()

    # -------------------------------------------------------------- coefficients
    @property
    def coef_(self) -> pd.DataFrame:
        """The weights, classes x genes (scikit-learn's ``coef_`` with names)."""
        self._check_fitted()
        w = self.net_.linear.weight.detach().double().cpu().numpy()
        return pd.DataFrame(w, index=pd.Index(self.classes_, name="class"), columns=pd.Index(self.genes_))

    @property
    def intercept_(self) -> pd.Series:
        """The per-class bias (scikit-learn's ``intercept_``)."""
        self._check_fitted()
        b = self.net_.linear.bias.detach().double().cpu().numpy()
        return pd.Series(b, index=pd.Index(self.classes_, name="class"), name="intercept")

    # ---------------------------------------------------------------- persistence
    def _state(self):
        return join_states(net=self.net_.state_dict())

    def _extra_meta(self):
        return {"history": self.history_}

    def _load_state(self, tensors, meta):
        net = LinearClassifier(len(self.genes_), len(self.classes_)).to(dtype=self._dtype)
        net.load_state_dict(split_state(tensors, "net"))
        self.net_ = net.to(self.device).eval()
        self.history_ = meta.get("history", {})
