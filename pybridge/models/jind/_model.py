"""JIND: joint integration and discrimination (Goyal, Serrano, Shomorony, Hernaez, Ochoa).

Three stages, each usable on its own:

1. **Prediction model** on the labelled reference ("source"): an encoder F
   (``Linear(genes -> 256)`` with dropout 0.2; its output, *before* any ReLU,
   is the latent code h) and a classifier P (``ReLU -> Linear(256, 256) ->
   ReLU -> Linear(256, K)``), trained with class-weighted cross-entropy,
   ``w_k = 2 / (K (eps + n_k))`` with ``n_k`` the fraction of reference cells of
   type k and ``eps = 0.01``. Adam (lr 1e-3, batch 128), the learning rate is
   halved when the epoch training loss plateaus, and the epoch with the best
   validation accuracy is kept. Per-class rejection thresholds (outlier
   fraction 0.05) come from the validation predictions of that checkpoint
   (:mod:`pybridge.rejection`, shared with the other classifiers).
2. **Asymmetric alignment** of a query ("target"): with F and P frozen, a
   generator ``h_hat = S(x) * h + B(x)`` (S, B: two MLPs ``genes -> 512 -> 512
   -> 256`` on the expression profile, ``S = 1 + s(x)``) is trained against a
   discriminator on latent codes (``256 -> 512 -> 256 -> 256 -> 1``, LeakyReLU
   0.2) that separates reference codes from generated query codes. RMSProp
   (lr 1e-4; weight decay 1e-2 for G, 1e-6 for D), batch 512, two
   discriminator steps per generator step, and the penalty
   ``1e-3 * mean ||S(x) - 1||_2`` on the generator. Prediction is then
   ``P(ReLU(h_hat))``. Only the query is moved, so the prediction model is
   reused for every new query.
3. **JIND+** (``jind_plus=True``): query cells whose aligned prediction passes
   thresholds recomputed with outlier fraction 0.3 become pseudo-labels; with
   the generator frozen, copies of F and P are fine-tuned on them (Adam 1e-4,
   batch 32, 10 epochs, reference class weights, best pseudo-validation
   accuracy kept). Rejection at prediction time still uses the reference
   thresholds (outlier fraction 0.05), as in the reference code.

Preprocessing: library-size normalisation to ``target_sum`` counts, then
``log2(1 + x)``; the ``n_top_genes`` (5000) genes with the highest variance of
the log data of the *reference* are kept and every query is mapped onto them
(missing genes are zero). When a query is given at fit time, genes are first
restricted to those shared with it (the reference code asks users to
intersect the genes of both batches first).

Choices where the paper and its reference code (github.com/mohit1997/JIND)
disagree, or where the paper is silent; each is an option of
:class:`JINDConfig`:

* Calibration (not part of the paper): the probabilities are temperature-scaled
  with one temperature fitted on the classifier's held-back validation cells
  (labels do not change; the rejection thresholds are computed on the
  calibrated scores; the same temperature applies to the aligned and JIND+
  stages). ``calibrate=False`` gives the classifier's softmax, as in the paper.
* Library-size normalisation: the paper log-transforms data that were, for
  its batched benchmarks, already library-normalised; pybridge takes raw
  counts, so it first scales each cell to ``target_sum=1e4`` as the later
  reference code does (``target_sum=None``: log only, as the preprint code).
  Log base 2 as printed in the paper (the code uses the natural log:
  ``log_base=math.e``).
* Gene selection: plain per-gene variance of the log data, as the code does
  (``gene_selection="dispersion"`` uses variance/mean).
* Classifier stage: the paper's 70/30 stratified split (code: 80/20,
  ``val_fraction=0.2``), 30 epochs (code: 15), halve the learning rate after
  5 epochs without improvement of the training loss (code: patience 2 with a
  5 % relative threshold, ``lr_patience=2, lr_threshold=0.05``). The code's
  later relative Gaussian input noise is ``input_noise`` (default off, as in
  the paper).
* Thresholds: per predicted class, from validation predictions; pybridge's
  shared rule takes the value at position ``int(theta * n)`` of the sorted top
  probabilities (the code takes ``int(theta * n) + 1`` and falls back to 0.9
  for small classes). Classes with no validation predictions keep 0.9.
* Generator initialisation: the paper asks for an identity map at start; the
  code only approximates it with default initialisation. Here the last layers
  of S and B start at zero, so G is exactly the identity
  (``generator_init="default"`` for the code's variant). The code's learnable
  input shift is ``input_shift=True`` (off: not in the paper).
* GAN length, stopping and checkpoint (not in the paper; label-free, from the
  later reference code): epochs of ``max(ceil(n_query / batch),
  gan_min_steps=40)`` generator steps, at most ``gan_epochs=20`` (the preprint
  code's number). With ``gan_balance`` a generator step is skipped while the
  epoch's running generator loss is below 0.4 and the discriminator steps are
  skipped while it is above 0.8 (unless the discriminator loss exceeds 1.0);
  otherwise the paper's 2 discriminator steps per generator step run. An
  epoch whose running generator and discriminator losses both lie in
  (0.5, 0.78) is an *equilibrium* epoch; only those are candidates, the query's
  rejection fraction (at the reference thresholds) is measured for each, and
  the candidate with the lowest one is kept. Training stops after
  ``gan_max_count=3`` equilibrium epochs or ``gan_patience=3`` epochs in a row
  without one. Deviation from that code: the identity map (no alignment) is
  always a candidate, so a GAN that never reaches equilibrium is not applied
  (the code would keep its last state), and alignment never raises the query's
  rejection rate. Why the cautious default: on small queries whose cell-type
  composition differs from the reference, the distribution matching moves
  cells into the wrong classes. The paper's plain schedule, run for all
  epochs with every epoch a candidate, is ``gan_stop="epochs",
  gan_balance=False, gan_patience=None``; it lowers rejection further but can
  cost much raw accuracy on such queries. Like any distribution matching, the
  alignment assumes the query holds roughly the reference's cell types in
  similar proportions (the paper's stated assumption); when it does not
  (e.g. donors that differ widely in composition), even the default can lower
  raw accuracy, and ``align=False`` skips the alignment.
  ``align_selection="last"`` keeps the final generator instead of the
  lowest-rejection one.
* Alignment needs the reference's latent codes, not the reference itself: the
  frozen encoder's codes of up to ``max_source_codes`` reference cells are
  stored with the model, so a saved model can be aligned to new queries
  without the training matrix (identical to recomputing them, since the
  encoder is frozen during alignment).
* JIND+: the paper's variant (confident cells at outlier fraction 0.3,
  encoder and classifier fine-tuned, reference class weights, 70/30 split);
  the later code's ``ftune_top`` (encoder only, top 95 % per class) is not
  implemented. With ``align=False`` JIND+ self-trains on unaligned
  predictions. JIND+ is opt-in (``jind_plus=False`` by default): the paper
  presents it as an extension; it lowers rejection, but self-training on the
  query's own predictions can also lower effective accuracy and teach the
  model to accept cells of a type the reference lacks.

Using a model: ``fit(reference, query=query)`` runs every enabled stage;
``predict(query, stage=...)`` gives any stage's result. The prediction model
alone can be saved, loaded and aligned to new queries with ``adapt(query)``
(the saved directory holds weights, the reference codes and validation
probabilities, never the training matrix). ``annotate(query)`` does both
steps as JIND intends for each new target batch (align when the model is not
aligned to that query yet, then predict); ``pybridge predict``, the R bridge
and ``RunJIND(x, model)`` with a saved model call it, so a model trained once
gives a query the labels that ``fit(reference, query=query)`` would (same
seed and options) when the query has all the reference's genes (``fit`` with
a query first limits the genes to those both share).

Measurements behind these defaults (accuracy, rejection, seeds, datasets):
``docs/methods/jind.md``.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from ..._io import join_states, split_state
from ..._settings import logger
from ...data import (
    InfiniteSampler,
    align_columns,
    densify,
    epoch_batches,
    gene_overlap,
    hvg_by_dispersion,
    iter_dense,
    normalize_total,
    shared_genes,
)
from ...rejection import class_thresholds, reject
from ...train import BestWeights, History, Timer, make_rng, progress, seed_everything, split_indices
from .._base import Annotator
from ._module import JINDClassifier, JINDDiscriminator, JINDEncoder, JINDGenerator, _Frozen
from ._preprocess import _fingerprint, jind_class_weights, top_variance_genes

STAGES = ("base", "aligned", "plus")


@dataclass(frozen=True)
class JINDConfig:
    """JIND hyperparameters; defaults follow the paper (see the module docstring for each choice)."""

    # preprocessing
    n_top_genes: int = 5000
    gene_selection: str = "variance"  # "variance" (reference code) or "dispersion"
    target_sum: float | None = 1e4  # library size before the log; None = log only
    log_base: float = 2.0
    # prediction model
    n_latent: int = 256
    n_hidden: int = 256
    dropout: float = 0.2
    input_noise: float = 0.0  # relative Gaussian input noise during training (later reference code: 0.2)
    class_weight_eps: float = 0.01
    lr: float = 1e-3
    batch_size: int = 128
    n_epochs: int = 30
    val_fraction: float = 0.3
    lr_factor: float = 0.5
    lr_patience: int = 5
    lr_threshold: float = 1e-4
    # rejection
    reject: bool = True
    outlier_fraction: float = 0.05
    calibrate: bool = True  # temperature scaling on the validation cells; False: the classifier's softmax (paper)
    # asymmetric alignment
    align: bool = True
    gan_hidden: int = 512
    gan_batch_size: int = 512
    gan_epochs: int = 20
    gan_min_steps: int = 40
    gan_stop: str = "equilibrium"  # or "epochs"
    gan_max_count: int = 3
    gan_patience: int | None = 3
    gan_balance: bool = True  # skip G / D updates when one side runs away (later reference code)
    d_steps: int = 2
    g_lr: float = 1e-4
    d_lr: float = 1e-4
    g_weight_decay: float = 1e-2
    d_weight_decay: float = 1e-6
    scale_penalty: float = 1e-3
    generator_init: str = "identity"  # or "default"
    input_shift: bool = False
    align_selection: str = "rejection"  # or "last"
    max_source_codes: int = 50000
    # JIND+
    jind_plus: bool = False
    plus_outlier_fraction: float = 0.3
    plus_lr: float = 1e-4
    plus_batch_size: int = 32
    plus_epochs: int = 10
    plus_val_fraction: float = 0.3
    plus_min_cells: int = 10

    def __post_init__(self):
        choices = {
            "gene_selection": ("variance", "dispersion"),
            "generator_init": ("identity", "default"),
            "align_selection": ("rejection", "last"),
            "gan_stop": ("epochs", "equilibrium"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}.")
        for name in ("outlier_fraction", "plus_outlier_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        for name in ("val_fraction", "plus_val_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        for name in (
            "n_top_genes",
            "n_latent",
            "n_hidden",
            "gan_hidden",
            "batch_size",
            "gan_batch_size",
            "plus_batch_size",
            "d_steps",
            "max_source_codes",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        for name in ("n_epochs", "gan_epochs", "plus_epochs", "gan_min_steps", "plus_min_cells", "gan_max_count"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.target_sum is not None and self.target_sum <= 0:
            raise ValueError(f"target_sum must be positive or None, got {self.target_sum}.")
        if self.log_base <= 1.0:
            raise ValueError(f"log_base must be > 1, got {self.log_base}.")
        if self.class_weight_eps < 0:
            raise ValueError(f"class_weight_eps must be >= 0, got {self.class_weight_eps}.")
        if self.gan_patience is not None and int(self.gan_patience) < 1:
            raise ValueError(f"gan_patience must be None or >= 1, got {self.gan_patience}.")


# ---------------------------------------------------------------------------- estimator
class JIND(Annotator):
    """JIND estimator.

    ``JIND(**options).fit(reference, query=query).predict(query)`` trains the
    prediction model, aligns the query and (with ``jind_plus=True``) self-trains
    on it. To reuse one reference model: ``model = JIND().fit(reference)``, then
    ``model.adapt(query).predict(query)`` for each query (every ``adapt`` starts
    again from the reference model), or ``model.predict(query, stage="base")``
    without alignment.

    Parameters
    ----------
    config
        A :class:`JINDConfig` or dict; keyword ``overrides`` replace single options.
    seed
        Seeds every random step (split, batches, dropout, initialisation, GAN sampling).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    verbose
        Show progress bars (default: ``pybridge.settings.verbose``).
    """

    method = "jind"
    config_cls = JINDConfig

    def __init__(self, config=None, *, seed=0, device="auto", verbose=None, **overrides):
        super().__init__(config, seed=seed, device=device, verbose=verbose, **overrides)
        self.encoder_: JINDEncoder | None = None
        self.classifier_: JINDClassifier | None = None
        self.generator_: JINDGenerator | None = None
        self.plus_encoder_: JINDEncoder | None = None
        self.plus_classifier_: JINDClassifier | None = None
        self.source_codes_: torch.Tensor | None = None  # frozen-encoder codes of reference cells (CPU)
        self.val_probabilities_: np.ndarray | None = None  # reference validation predictions (thresholds)
        self.class_weights_: np.ndarray | None = None

    # ------------------------------------------------------------ data transform
    def _log(self, X: sp.csr_matrix) -> sp.csr_matrix:
        cfg = self.config
        if cfg.target_sum is not None:
            return normalize_total(X, cfg.target_sum, log=True, base=cfg.log_base)
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        np.log1p(X.data, out=X.data)
        X.data /= np.float32(np.log(cfg.log_base))
        return X

    def _transform(self, X, genes, target_genes):
        """Normalise and log on all of the dataset's genes, then align to ``target_genes``."""
        return align_columns(self._log(X), genes, target_genes)

    # ------------------------------------------------------------------- fitting
    def fit(
        self,
        reference,
        *,
        labels_key: str = "cell_type",
        layer: str | None = None,
        query=None,
        query_layer: str | None = None,
    ) -> "JIND":
        """Train the prediction model on ``reference``; with a ``query``, also align it (and JIND+ if enabled).

        With a query, genes are restricted to those it shares with the
        reference before the top-variance genes are chosen.
        """
        timer = Timer()
        cfg = self.config
        self._reset_adaptation()
        with timer("preprocess_s"):
            Xr, genes_r, labels, labelled = self._read_reference(reference, labels_key, layer)
            overlap = None
            if query is not None:
                Xq_raw, genes_q = self._read(query, query_layer, "query")
                candidates = shared_genes(genes_r, genes_q)
                overlap = gene_overlap(genes_r, genes_q, what="query")
            else:
                candidates = genes_r
            Xr = self._transform(Xr, genes_r, candidates)[np.flatnonzero(labelled)]
            labels = labels[labelled]
            if cfg.gene_selection == "variance":
                keep = top_variance_genes(Xr, cfg.n_top_genes)
            else:
                keep = hvg_by_dispersion(Xr, cfg.n_top_genes)
            if len(keep) == 0:
                raise ValueError("No gene varies across the reference cells; check that the reference holds counts.")
            genes = pd.Index(candidates[keep])
            Xr = Xr[:, keep].tocsr()
            Xq = self._transform(Xq_raw, genes_q, genes) if query is not None else None
        classes = sorted(pd.unique(labels).tolist())
        y = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
        self.genes_, self.classes_ = genes, classes
        self.class_weights_ = jind_class_weights(y, len(classes), cfg.class_weight_eps)
        with timer("train_s"):
            val_probs, val_y = self._train_classifier(Xr, y)
        self.val_probabilities_ = val_probs
        self._fit_validation(val_probs, val_y)
        self._store_source_codes(Xr)
        self.fit_info_.update(
            {
                "n_reference_cells": int(Xr.shape[0]),
                "n_genes": int(len(genes)),
                "reference_gene_overlap": overlap,
                "timings": timer.times,
            }
        )
        if query is not None and (cfg.align or cfg.jind_plus):
            self._adapt(Xq, timer, query_id=_fingerprint(query.obs_names))
        return self

    def _reset_adaptation(self) -> None:
        self.generator_ = self.plus_encoder_ = self.plus_classifier_ = None
        for k in ("alignment", "jind_plus", "n_query_cells", "query_fingerprint"):
            self.fit_info_.pop(k, None)
        self.fit_info_.get("timings", {}).pop("align_s", None)
        self.fit_info_.get("timings", {}).pop("jind_plus_s", None)
        self.history_.pop("alignment", None)
        self.history_.pop("jind_plus", None)

    def _make_scheduler(self, opt):
        cfg = self.config
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, threshold=cfg.lr_threshold
        )

    def _train_classifier(self, X, y) -> tuple[np.ndarray | None, np.ndarray | None]:
        cfg, dev = self.config, self.device
        seed_everything(self.seed)
        rng = make_rng(self.seed)
        K, G = len(self.classes_), X.shape[1]
        train_idx, val_idx = split_indices(y, cfg.val_fraction, rng)
        enc = JINDEncoder(G, cfg.n_latent, cfg.dropout, cfg.input_noise).to(dev)
        clf = JINDClassifier(cfg.n_latent, K, cfg.n_hidden).to(dev)
        weight = torch.as_tensor(self.class_weights_, dtype=torch.float32, device=dev)
        best = self._fit_supervised(
            enc,
            clf,
            None,
            X,
            y,
            train_idx,
            val_idx,
            weight,
            cfg.lr,
            cfg.batch_size,
            cfg.n_epochs,
            rng,
            "JIND",
            strict=True,
        )
        self.encoder_, self.classifier_ = enc.eval(), clf.eval()
        self.history_ = {"classifier": best.pop("history")}
        self.fit_info_.update(
            {
                "epochs_trained": cfg.n_epochs,
                "best_epoch": best["best_epoch"],
                "best_val_accuracy": best["best_val_accuracy"],
            }
        )
        logger.info(
            "JIND classifier: best validation accuracy %.4f at epoch %s", best["best_val_accuracy"], best["best_epoch"]
        )
        if len(val_idx) == 0:
            return None, None
        probs, _ = self._forward_all(X[val_idx], enc, clf, None)
        return probs, y[val_idx]

    def _fit_supervised(
        self, enc, clf, gen, X, y, train_idx, val_idx, weight, lr, batch_size, n_epochs, rng, desc, strict
    ):
        """Weighted-CE training of (enc, clf) with ``gen`` frozen; keeps the best validation-accuracy epoch.

        ``strict``: a later epoch replaces the checkpoint only with a higher
        accuracy (classifier stage) or also with an equal one (JIND+), as in the
        reference code. Without validation cells the last epoch is kept.
        """
        dev = self.device
        params = list(enc.parameters()) + list(clf.parameters())
        opt = torch.optim.Adam(params, lr=lr, foreach=True)
        sched = self._make_scheduler(opt)
        y_t = torch.as_tensor(y, device=dev)
        history = History()
        best_acc, best_epoch, best = -1.0, None, BestWeights()
        bar = progress(n_epochs, self.verbose, desc)
        with _Frozen(gen):
            for epoch in range(n_epochs):
                enc.train()
                clf.train()
                total, n_batches = 0.0, 0
                for b in epoch_batches(len(train_idx), batch_size, rng, min_size=1):
                    idx = train_idx[b]
                    x = densify(X, idx, dev)
                    h = enc(x) if gen is None else gen(x, enc)[0]
                    loss = F.cross_entropy(clf(h), y_t[idx], weight=weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item()
                    n_batches += 1
                train_loss = total / max(n_batches, 1)
                sched.step(train_loss)
                acc = self._accuracy(X, y, val_idx, enc, clf, gen) if len(val_idx) else float("nan")
                history.record(loss=train_loss, val_accuracy=acc, lr=opt.param_groups[0]["lr"])
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{acc:.3f}")
                improved = (acc > best_acc) if strict else (acc >= best_acc)
                if len(val_idx) == 0 or improved:
                    best_acc, best_epoch = acc, epoch
                    best.keep(epoch, acc, {"enc": enc, "clf": clf})
        bar.close()
        best.restore({"enc": enc, "clf": clf})
        enc.eval()
        clf.eval()
        return {"best_epoch": best_epoch, "best_val_accuracy": float(best_acc), "history": history.to_dict()}

    @torch.no_grad()
    def _accuracy(self, X, y, idx, enc, clf, gen) -> float:
        probs, _ = self._forward_all(X[idx], enc, clf, gen)
        return float((probs.argmax(1) == y[idx]).mean())

    @torch.no_grad()
    def _forward_all(self, X, enc, clf, gen, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities, latent codes) for all rows of ``X`` in eval mode."""
        modes = [(m, m.training) for m in (enc, clf, gen) if m is not None]
        for m, _ in modes:
            m.eval()
        probs, codes = [], []
        for _, xb in iter_dense(X, batch_size, self.device):
            h = enc(xb) if gen is None else gen(xb, enc)[0]
            probs.append(F.softmax(clf(h).double(), dim=1).cpu().numpy())
            codes.append(h.float().cpu().numpy())
        for m, training in modes:
            m.train(training)
        return np.concatenate(probs), np.concatenate(codes)

    def _store_source_codes(self, X) -> None:
        n = X.shape[0]
        idx = np.arange(n)
        if n > self.config.max_source_codes:
            idx = np.sort(make_rng(self.seed).choice(n, self.config.max_source_codes, replace=False))
        _, codes = self._forward_all(X[idx], self.encoder_, self.classifier_, None)
        self.source_codes_ = torch.from_numpy(codes)

    # ---------------------------------------------------------------- adaptation
    def adapt(self, query, *, layer: str | None = None) -> "JIND":
        """Align the prediction model to ``query`` (and run JIND+ if ``jind_plus``); returns ``self``.

        Starts from the reference-trained model every time, so one fitted or
        loaded model can be adapted to many queries in turn; does not need the
        reference data.
        """
        self._check_fitted()
        if not (self.config.align or self.config.jind_plus):
            raise ValueError("Nothing to adapt: this model has align=False and jind_plus=False.")
        Xq, overlap = self.prepare_query(query, layer)
        self._reset_adaptation()
        timings = self.fit_info_.setdefault("timings", {})
        timer = Timer()
        timer.times = timings
        self._adapt(Xq, timer, overlap, query_id=_fingerprint(query.obs_names))
        return self

    def _adapt(self, Xq, timer, overlap=None, query_id: str | None = None) -> None:
        cfg = self.config
        if Xq.shape[0] < 2:
            raise ValueError(
                f"The query has {Xq.shape[0]} cell(s); alignment and JIND+ need at least 2. "
                "Pass align=False, jind_plus=False to annotate it with the reference model alone."
            )
        self.fit_info_["n_query_cells"] = int(Xq.shape[0])
        self.fit_info_["query_fingerprint"] = query_id
        if overlap is not None:
            self.fit_info_["reference_gene_overlap"] = overlap
        if cfg.align:
            with timer("align_s"):
                self._align(Xq)
        if cfg.jind_plus:
            with timer("jind_plus_s"):
                self._self_train(Xq)

    def _rejection_rate(self, X, gen) -> float:
        probs, _ = self._forward_all(X, self.encoder_, self.classifier_, gen)
        return float(reject(self._calibrated(probs), self.thresholds_).mean())  # thresholds are on calibrated scores

    def _align(self, Xq) -> None:
        """Train the generator against the discriminator; keep the generator chosen by ``align_selection``."""
        cfg, dev = self.config, self.device
        seed_everything(self.seed + 1)
        rng = make_rng(self.seed + 1)
        enc, clf = self.encoder_, self.classifier_
        n_t, G = Xq.shape
        codes = self.source_codes_.to(dev)
        n_s = codes.shape[0]
        gen = JINDGenerator(G, cfg.n_latent, cfg.gan_hidden, cfg.generator_init == "identity", cfg.input_shift).to(dev)
        disc = JINDDiscriminator(cfg.n_latent, cfg.gan_hidden).to(dev)
        opt_g = torch.optim.RMSprop(gen.parameters(), lr=cfg.g_lr, weight_decay=cfg.g_weight_decay, foreach=True)
        opt_d = torch.optim.RMSprop(disc.parameters(), lr=cfg.d_lr, weight_decay=cfg.d_weight_decay, foreach=True)
        bs = max(1, min(cfg.gan_batch_size, n_t, n_s))
        steps = max(math.ceil(n_t / bs), cfg.gan_min_steps)
        tgt, src = InfiniteSampler(n_t, bs, rng), InfiniteSampler(n_s, bs, rng)
        ones, zeros = torch.ones(bs, device=dev), torch.zeros(bs, device=dev)
        history = History()
        eq_low, eq_high = 0.5, 0.78
        with _Frozen(enc, clf):
            rej0 = self._rejection_rate(Xq, gen)
            best_rej, best_epoch, best = rej0, 0, BestWeights()
            best.keep(0, rej0, {"gen": gen})
            history.record(
                g_loss=float("nan"), d_loss=float("nan"), penalty=float("nan"), rejection=rej0, candidate=1.0
            )
            bar = progress(cfg.gan_epochs, self.verbose, "JIND align")
            count = dry = 0
            for epoch in range(1, cfg.gan_epochs + 1):
                gen.train()
                disc.train()
                g_run = d_run = 0.7  # running epoch means (the gating rule's state)
                n_g = n_d = 0
                pen_sum = 0.0
                for _ in range(steps):
                    x = densify(Xq, next(tgt), dev)
                    h_hat, s = gen(x, enc)
                    penalty = s.norm(dim=1).mean()
                    g_loss = F.binary_cross_entropy_with_logits(disc(h_hat), ones[: len(x)])
                    opt_g.zero_grad(set_to_none=True)
                    if not cfg.gan_balance or g_run > 0.4:
                        (g_loss + cfg.scale_penalty * penalty).backward()
                        opt_g.step()
                    g_run = (g_run * n_g + g_loss.item()) / (n_g + 1)
                    n_g += 1
                    pen_sum += penalty.item()
                    for j in range(cfg.d_steps):
                        if j == 0:
                            fake = h_hat.detach()
                        else:
                            with torch.no_grad():
                                fake = gen(densify(Xq, next(tgt), dev), enc)[0]
                        real = codes[torch.as_tensor(next(src), device=dev)]
                        d_loss = 0.5 * (
                            F.binary_cross_entropy_with_logits(disc(real), ones[: len(real)])
                            + F.binary_cross_entropy_with_logits(disc(fake), zeros[: len(fake)])
                        )
                        opt_d.zero_grad(set_to_none=True)
                        if not cfg.gan_balance or g_run < 0.8 or d_run > 1.0:
                            d_loss.backward()
                            opt_d.step()
                        d_run = (d_run * n_d + d_loss.item()) / (n_d + 1)
                        n_d += 1
                equilibrium = eq_low < g_run < eq_high and eq_low < d_run < eq_high
                candidate = cfg.gan_stop == "epochs" or equilibrium
                rej = self._rejection_rate(Xq, gen) if candidate else float("nan")
                history.record(
                    g_loss=g_run, d_loss=d_run, penalty=pen_sum / steps, rejection=rej, candidate=float(candidate)
                )
                bar.update(1)
                bar.set_postfix(g=f"{g_run:.3f}", d=f"{d_run:.3f}", rej=f"{rej:.3f}")
                if candidate and rej < best_rej:
                    best_rej, best_epoch = rej, epoch
                    best.keep(epoch, rej, {"gen": gen})
                if cfg.gan_stop == "equilibrium":
                    count, dry = (count + 1, 0) if equilibrium else (count, dry + 1)
                    if count >= cfg.gan_max_count or (cfg.gan_patience is not None and dry >= cfg.gan_patience):
                        break
                elif cfg.gan_patience is not None and epoch - best_epoch >= cfg.gan_patience:
                    break
            bar.close()
        epochs_run = len(history["rejection"]) - 1
        if cfg.align_selection == "rejection":
            best.restore({"gen": gen})
            chosen = best_epoch
        else:
            chosen = epochs_run
            if np.isnan(history["rejection"][chosen]):
                history["rejection"][chosen] = self._rejection_rate(Xq, gen)
        gen.eval()
        self.generator_ = gen
        self.history_["alignment"] = history.to_dict()
        self.fit_info_["alignment"] = {
            "epochs_run": epochs_run,
            "steps_per_epoch": steps,
            "batch_size": bs,
            "selected_epoch": chosen,
            "applied": bool(chosen != 0 or cfg.generator_init != "identity"),
            "n_candidate_epochs": int(sum(history["candidate"][1:])),
            "query_rejection_before": rej0,
            "query_rejection_after": float(history["rejection"][chosen]),
            "n_source_codes": int(n_s),
        }
        if chosen == 0 and cfg.generator_init == "identity":
            logger.info(
                "JIND alignment: no GAN epoch lowered the query's rejection rate (%d candidate epochs of %d);"
                " the query is left unaligned",
                self.fit_info_["alignment"]["n_candidate_epochs"],
                epochs_run,
            )
        else:
            logger.info(
                "JIND alignment: query rejection %.3f -> %.3f (epoch %d of %d)",
                rej0,
                history["rejection"][chosen],
                chosen,
                epochs_run,
            )

    def _self_train(self, Xq) -> None:
        """JIND+: fine-tune copies of the encoder and classifier on confident query predictions."""
        cfg, dev = self.config, self.device
        seed_everything(self.seed + 2)
        rng = make_rng(self.seed + 2)
        gen = self.generator_
        probs, _ = self._forward_all(Xq, self.encoder_, self.classifier_, gen)
        if self.val_probabilities_ is None:
            raise ValueError("JIND+ needs the reference validation predictions; refit with val_fraction > 0.")
        tau = class_thresholds(self.val_probabilities_, cfg.plus_outlier_fraction)
        confident = np.flatnonzero(~reject(probs, tau))
        info = {"n_pseudo_labelled": int(len(confident)), "thresholds": dict(zip(self.classes_, map(float, tau)))}
        if len(confident) < max(cfg.plus_min_cells, 2):
            warnings.warn(
                f"JIND+ skipped: only {len(confident)} query cells pass the confidence thresholds "
                f"(plus_min_cells={cfg.plus_min_cells}); predictions use the aligned model.",
                UserWarning,
                stacklevel=3,
            )
            self.fit_info_["jind_plus"] = {**info, "skipped": True}
            return
        Xc = Xq[confident]
        y = probs[confident].argmax(1).astype(np.int64)
        train_idx, val_idx = split_indices(y, cfg.plus_val_fraction, rng)
        enc = copy.deepcopy(self.encoder_).to(dev).requires_grad_(True)
        clf = copy.deepcopy(self.classifier_).to(dev).requires_grad_(True)
        weight = torch.as_tensor(self.class_weights_, dtype=torch.float32, device=dev)
        best = self._fit_supervised(
            enc,
            clf,
            gen,
            Xc,
            y,
            train_idx,
            val_idx,
            weight,
            cfg.plus_lr,
            cfg.plus_batch_size,
            cfg.plus_epochs,
            rng,
            "JIND+",
            strict=False,
        )
        self.plus_encoder_, self.plus_classifier_ = enc, clf
        self.history_["jind_plus"] = best.pop("history")
        counts = np.bincount(y, minlength=len(self.classes_))
        self.fit_info_["jind_plus"] = {
            **info,
            **best,
            "skipped": False,
            "pseudo_label_counts": dict(zip(self.classes_, map(int, counts))),
        }
        logger.info("JIND+: fine-tuned on %d pseudo-labelled query cells", len(confident))

    # ---------------------------------------------------------------- prediction
    @property
    def stages_(self) -> list[str]:
        """Prediction stages this model can run: ``"base"``, ``"aligned"``, ``"plus"``."""
        out = ["base"] if self.encoder_ is not None else []
        if self.generator_ is not None:
            out.append("aligned")
        if self.plus_encoder_ is not None:
            out.append("plus")
        return out

    def _resolve_stage(self, stage: str | None) -> str:
        self._check_fitted()
        available = self.stages_
        if stage is None:
            return available[-1]
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES} or None, not {stage!r}.")
        if stage not in available:
            how = (
                "call adapt(query) or fit(reference, query=query)"
                if stage == "aligned"
                else "use jind_plus=True and call adapt(query) or fit(reference, query=query)"
            )
            raise ValueError(f"This JIND model has no {stage!r} stage yet (available: {available}); {how}.")
        return stage

    def _modules(self, stage: str):
        if stage == "plus":
            return self.plus_encoder_, self.plus_classifier_, self.generator_
        return self.encoder_, self.classifier_, (self.generator_ if stage == "aligned" else None)

    def _predict_arrays(self, X, stage: str | None = None):
        enc, clf, gen = self._modules(self._resolve_stage(stage))
        return self._forward_all(X, enc, clf, gen)

    def predict(self, query, *, layer: str | None = None, stage: str | None = None):
        """Annotate ``query``.

        ``stage``: ``"base"`` (prediction model only), ``"aligned"`` (through the
        generator) or ``"plus"`` (JIND+); default: the most adapted stage the
        model has. The aligned stages apply the alignment learned for the query
        passed to ``fit``/``adapt``; use ``adapt`` first for a different query.
        """
        requested = stage
        stage = self._resolve_stage(stage)
        if requested is None and stage != "base":
            adapted_to = self.fit_info_.get("query_fingerprint")
            if adapted_to is not None and adapted_to != _fingerprint(query.obs_names):
                warnings.warn(
                    "This JIND model was aligned to a different query (other cell names); its alignment is "
                    "applied as is. Call model.adapt(query) first, or predict(query, stage='base').",
                    UserWarning,
                    stacklevel=2,
                )
        t0 = time.perf_counter()
        Xq, overlap = self.prepare_query(query, layer)
        probs, embedding = self._predict_arrays(Xq, stage)
        res = self._result(query.obs_names, probs, embedding, overlap, time.perf_counter() - t0)
        res.params["stage"] = stage
        return res

    def annotate(self, query, *, layer: str | None = None):
        """Annotate a new query as JIND does: align to it first, then predict.

        JIND trains its classifier once and learns the alignment per target
        batch. So when the configuration asks for alignment (``align``) or
        JIND+ (``jind_plus``) and the model is not aligned to this query yet
        (a model trained on the reference alone, or aligned to another query),
        :meth:`adapt` runs first (seeded, no reference data needed); a model
        already aligned to this query (same cell names) predicts right away.
        With ``align=False, jind_plus=False`` this is the reference model
        alone (:meth:`predict` at the ``"base"`` stage). Used by ``pybridge
        predict``, ``RunJIND(x, model)`` and the R bridge.
        """
        cfg = self.config
        if cfg.align or cfg.jind_plus:
            wanted = "plus" if cfg.jind_plus else "aligned"
            if self.fit_info_.get("query_fingerprint") != _fingerprint(query.obs_names) or wanted not in self.stages_:
                logger.info("jind: aligning the model to this query (%d cells)", query.n_obs)
                self.adapt(query, layer=layer)
            return self.predict(query, layer=layer, stage=wanted)
        return self.predict(query, layer=layer, stage="base")

    # ---------------------------------------------------------------- persistence
    def _state(self):
        states = {"encoder": self.encoder_.state_dict(), "classifier": self.classifier_.state_dict()}
        if self.generator_ is not None:
            states["generator"] = self.generator_.state_dict()
        if self.plus_encoder_ is not None:
            states["plus_encoder"] = self.plus_encoder_.state_dict()
            states["plus_classifier"] = self.plus_classifier_.state_dict()
        tensors = join_states(**states)
        tensors["source_codes"] = self.source_codes_
        tensors["class_weights"] = torch.as_tensor(self.class_weights_, dtype=torch.float64)
        if self.val_probabilities_ is not None:
            tensors["val_probabilities"] = torch.as_tensor(self.val_probabilities_, dtype=torch.float64)
        return tensors

    def _extra_meta(self):
        return {"history": self.history_, "stages": self.stages_}

    def _build(self, cls, state, *args):
        m = cls(*args)
        m.load_state_dict(state)
        return m.to(self.device).eval()

    def _load_state(self, tensors, meta):
        cfg = self.config
        G, K = len(self.genes_), len(self.classes_)
        enc_args = (G, cfg.n_latent, cfg.dropout, cfg.input_noise)
        self.encoder_ = self._build(JINDEncoder, split_state(tensors, "encoder"), *enc_args)
        self.classifier_ = self._build(
            JINDClassifier, split_state(tensors, "classifier"), cfg.n_latent, K, cfg.n_hidden
        )
        gen_state = split_state(tensors, "generator")
        if gen_state:
            self.generator_ = self._build(
                JINDGenerator, gen_state, G, cfg.n_latent, cfg.gan_hidden, True, "input_bias" in gen_state
            )
        plus_state = split_state(tensors, "plus_encoder")
        if plus_state:
            self.plus_encoder_ = self._build(JINDEncoder, plus_state, *enc_args)
            self.plus_classifier_ = self._build(
                JINDClassifier, split_state(tensors, "plus_classifier"), cfg.n_latent, K, cfg.n_hidden
            )
        self.source_codes_ = tensors["source_codes"].float()
        self.class_weights_ = tensors["class_weights"].double().numpy()
        vp = tensors.get("val_probabilities")
        self.val_probabilities_ = None if vp is None else vp.double().numpy()
        if self.val_probabilities_ is not None:  # thresholds follow the (possibly overridden) outlier_fraction
            self._fit_rejection(self._calibrated(self.val_probabilities_))
        self.history_ = meta.get("history", {})
