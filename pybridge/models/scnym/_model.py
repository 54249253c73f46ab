"""scNym: semi-supervised adversarial label transfer (Kimmel & Kelley, Genome Research 2021).

The classifier is a fully connected network (genes -> 256 -> 256 -> 256 -> K;
Linear, BatchNorm, Dropout(0.5), ReLU in each hidden block) on log(CPM + 1)
input. Training combines

* supervised cross-entropy on MixUp-mixed, gene-masked reference cells,
* MixMatch semi-supervision on the query: pseudolabels from the current
  model in eval mode, sharpened with T = 0.5, mixed with dominant-observation
  MixUp (alpha = 0.3, lambda <- max(lambda, 1 - lambda)) across the joint
  [query ; reference] batch, and an interpolation-consistency (squared error
  of probabilities) loss whose weight ramps 0 -> 1 over 100 epochs,
* a domain adversary (256 -> ReLU -> n_domains) on the penultimate embedding,
  trained through gradient reversal whose weight ramps 0 -> 0.1 over 20 epochs.

Adadelta (lr 1.0, weight decay 1e-4, batch 256), early stopping on the
cross-entropy of a 10% validation split of the reference.

Choices where the paper and the reference code differ, or where pybridge
deviates on purpose (each is an option of :class:`ScNymConfig`):

* Calibration (not part of the paper): the probabilities are temperature-scaled
  with one temperature fitted on the held-back validation cells of the
  reference (the labels do not change; the rejection thresholds are computed on
  the calibrated scores). ``calibrate=False`` gives the network's softmax, as
  in the paper.
* Ramps: the paper says "sigmoid" for both; the reference code runs the
  MixMatch ramp linearly and the adversary ramp as exp(-5 (1 - t/T)^2).
  Default here: the paper's sigmoid (exp form) for both (``ssl_ramp``,
  ``adv_ramp`` accept ``"linear"``). The reference code's configuration is
  ``ssl_ramp="linear", discovery=False, joint_forward=False``: with
  ``discovery=False`` the linear MixMatch ramp needs separate forward
  passes, since with the joint pass it can send most query cells to one class.
* Epochs: the paper trains up to 400 epochs, the reference API 100 with
  patience 40 and at least 20 epochs. Default here: 400 epochs at most, early
  stopping with patience 40 starting after ``min_epochs`` = 20 (5% of 400 is
  20, so the paper's rule and the API agree). See ``n_epochs``.
* Forward passes: the reference code makes three train-mode passes per step
  (mixed query, mixed reference, unmixed adversary batch), so BatchNorm
  normalises each with its own statistics. pybridge does the same in
  discovery mode (the default) and without the adversary. With
  ``discovery=False`` it puts the three batches through the network in one
  pass by default (``joint_forward=None``), so BatchNorm sees both domains
  together; in discovery mode, and for MixMatch without the adversary, the
  joint pass can collapse (most query cells sent to one class), so those keep
  separate passes. ``True`` / ``False`` force one or the other
  (``joint_forward=False`` is the reference code's behaviour). A step in which
  one of the batches holds fewer than two cells always uses the joint pass
  (train-mode BatchNorm needs two cells).
* Batches: a reference or query smaller than one batch is used whole (the
  reference code loops forever when the query is smaller than a batch).
* Validation split: stratified by class (the reference code splits at random).
* Genes: trained on the genes shared by reference and query; a later query is
  aligned to the model's genes, missing ones set to 0 in log-CPM space.
  Option, off by default (the paper and its code use every shared gene):
  ``n_top_genes=N`` keeps the shared genes that are among the N with the
  highest normalised dispersion (Seurat / Scanpy ``flavor="seurat"``:
  log(variance / mean) of CPM, z-scored within 20 bins of mean expression)
  in the reference or in the query given to ``fit`` (their union, at most
  2 N genes; the query side uses no labels, like Seurat's
  ``SelectIntegrationFeatures``); ``top_genes_from="reference"`` takes the
  reference's N only. log-CPM is still computed on all of a dataset's genes.
  Genes that mark only a type the reference lacks count little in this
  choice, so a missing type is rejected less often than with every gene: the
  option suits queries expected to hold only the reference's types, together
  with ``discovery=False``. ``top_genes_flavor="seurat_v3"`` ranks raw counts
  by Seurat's "vst" standardised variance instead (``FindVariableFeatures``'
  default); ``"seurat"`` (dispersion) is the option's default.
* Discovery mode (``discovery=True``, the default): the paper's "new cell type
  discovery" configuration: only query cells whose pseudolabel confidence is
  >= 0.9 take part in MixMatch and in the adversary, so cells of a type the
  reference lacks are not pulled onto a reference type. The paper's main
  benchmarks run without it and report that it costs a little accuracy when
  every type is shared; the reference code's API (``scnym_api``) turns it on by
  default, and so does pybridge. ``discovery=False`` is the paper's main
  configuration.
* Class balance: like the paper, no balancing by default; ``balanced_classes=True``
  samples reference cells with weights 1/n_class (the reference code's option).
* Rejection (``reject=True``; not in the paper, whose rule is a fixed
  confidence cut, ``min_confidence=0.5`` here). Two scores, chosen by
  ``reject_score``; ``"auto"`` (default) takes ``"distance"`` in discovery mode
  and ``"confidence"`` without it.
  ``"confidence"``: JIND-style per-class thresholds from the validation
  predictions (shared with the other classifiers). With a small reference
  (fewer than 1 / ``outlier_fraction`` validation cells in a class, i.e. under
  ~200 reference cells of it) a class's threshold is its least confident
  validation cell, and a query from another technology can lose far more than
  ``outlier_fraction`` of its cells.
  ``"distance"``: the mean distance of a cell's (penultimate-layer) embedding to
  its ``reject_neighbors`` nearest reference cells. A cell is rejected when
  that distance exceeds both its predicted class's threshold from the
  reference (the 1 - ``outlier_fraction`` quantile of the reference cells'
  leave-one-out distances) and the query's own outlier bound for that class
  (median + ``reject_nmads`` MADs of the distances of the query cells predicted
  as it; 3 as in scater's ``isOutlier``), so a query's rejections depend on the
  other query cells predicted with it. In discovery mode it rejects a type
  that is distinct from every reference type and few known-type cells, but it
  catches a missing type that resembles a reference type less often than the
  confidence thresholds. Without discovery the adversary pulls unseen cells
  onto the reference and the distance does not catch them, hence "auto". The
  reference embeddings (at most ``reject_max_reference`` cells) are saved with
  the model.

Measurements behind these defaults (accuracy, rejection, seeds, datasets):
``docs/methods/scnym.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
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
    iter_dense,
    log_cpm,
    shared_genes,
)
from ...rejection import UNASSIGNED, distance_thresholds, knn_distances, query_distance_thresholds
from ...train import EarlyStopping, History, Timer, make_rng, progress, seed_everything, split_indices
from .._base import Annotator
from ._module import DomainAdversary, ScNymNet, grad_reverse, mask_genes, ramp_weight, sharpen, soft_cross_entropy
from ._preprocess import _domains, _top_genes


@dataclass(frozen=True)
class ScNymConfig:
    """scNym hyperparameters; defaults follow the paper (see the module docstring for deviations)."""

    n_hidden: int = 256
    n_hidden_layers: int = 3  # G -> 256 -> 256 -> 256 -> K
    dropout: float = 0.5
    lr: float = 1.0
    weight_decay: float = 1e-4
    batch_size: int = 256
    n_epochs: int = 400
    patience: int = 40
    min_epochs: int = 20
    val_fraction: float = 0.1
    mask_fraction: float = 0.1  # gene masking augmentation of reference cells
    mixup_alpha: float = 0.3
    temperature: float = 0.5  # pseudolabel sharpening
    ssl_max_weight: float = 1.0
    ssl_ramp_epochs: int = 100
    ssl_ramp: str = "sigmoid"
    adv_max_weight: float = 0.1
    adv_ramp_epochs: int = 20
    adv_ramp: str = "sigmoid"
    use_ssl: bool = True
    use_adversary: bool = True
    discovery: bool = True  # the reference code's API default ("new_identity_discovery"); False: the paper's main runs
    pseudolabel_min_confidence: float = 0.9  # used in discovery mode
    joint_forward: bool | None = None  # one pass for all batches; None: joint only without discovery, with adversary
    balanced_classes: bool = False  # sample reference cells with weights 1/n_class (reference-code option)
    reject: bool = False
    outlier_fraction: float = 0.05
    calibrate: bool = True  # temperature scaling on the validation cells; False: the network's softmax (paper)
    min_confidence: float = 0.0  # cells below this top probability are also Unassigned when > 0
    reject_score: str = "auto"  # "confidence", "distance" (k-NN distance in the embedding); auto: by discovery
    reject_neighbors: int = 5  # k of the "distance" score
    reject_max_reference: int = 10000  # reference cells kept (random subset) for the "distance" score
    reject_nmads: float = 3.0  # "distance": query-side outlier threshold, median + nmads x MAD per class
    n_top_genes: int | None = (
        None  # None: every shared gene (paper); N: the N most variable (see top_genes_from, _flavor)
    )
    top_genes_from: str = "both"  # n_top_genes from "both" the reference and the fit's query (union), or "reference"
    top_genes_flavor: str = "seurat"  # how n_top_genes ranks: "seurat" (dispersion) or "seurat_v3" (vst)

    @property
    def joint_pass(self) -> bool:
        """Whether the batches of a training step share one forward pass (``joint_forward``, resolved)."""
        if self.joint_forward is not None:
            return self.joint_forward
        return not self.discovery and self.use_adversary

    @property
    def rejection_score(self) -> str:
        """The score ``reject=True`` uses (``reject_score``, resolved): "auto" is "distance" in discovery mode and
        "confidence" without it (there the adversary pulls unseen cells onto the reference, and distance misses
        them)."""
        if self.reject_score != "auto":
            return self.reject_score
        return "distance" if self.discovery else "confidence"

    def __post_init__(self):
        for name in ("ssl_ramp", "adv_ramp"):
            if getattr(self, name) not in ("sigmoid", "linear"):
                raise ValueError(f"{name} must be 'sigmoid' or 'linear', not {getattr(self, name)!r}.")
        if self.batch_size < 2:
            raise ValueError("batch_size must be at least 2 (BatchNorm needs two cells).")
        if not 0 <= self.mask_fraction < 1:
            raise ValueError("mask_fraction must be in [0, 1).")
        if self.n_hidden_layers < 1:
            raise ValueError("n_hidden_layers must be at least 1.")
        if self.reject_score not in ("auto", "confidence", "distance"):
            raise ValueError(f"reject_score must be 'auto', 'confidence' or 'distance', not {self.reject_score!r}.")
        if self.reject_neighbors < 1 or self.reject_max_reference < 2 or self.reject_nmads <= 0:
            raise ValueError("reject_neighbors must be >= 1, reject_max_reference >= 2 and reject_nmads > 0.")
        if self.n_top_genes is not None and self.n_top_genes < 10:
            raise ValueError("n_top_genes must be at least 10, or None to use every shared gene.")
        if self.top_genes_from not in ("both", "reference"):
            raise ValueError(f"top_genes_from must be 'both' or 'reference', not {self.top_genes_from!r}.")
        if self.top_genes_flavor not in ("seurat_v3", "seurat"):
            raise ValueError(f"top_genes_flavor must be 'seurat_v3' or 'seurat', not {self.top_genes_flavor!r}.")


# ---------------------------------------------------------------------------- estimator
class ScNym(Annotator):
    """scNym estimator: ``ScNym(**options).fit(reference, query=query).predict(query)``.

    Parameters
    ----------
    config
        A :class:`ScNymConfig` or dict; keyword ``overrides`` replace single options.
    seed
        Seeds every random step (splits, batches, masking, MixUp, weights).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    verbose
        Show a progress bar (default: ``pybridge.settings.verbose``).
    """

    method = "scnym"
    config_cls = ScNymConfig

    def __init__(self, config=None, *, seed=0, device="auto", verbose=None, **overrides):
        super().__init__(config, seed=seed, device=device, verbose=verbose, **overrides)
        self.net_: ScNymNet | None = None
        self.adversary_: DomainAdversary | None = None
        self.domains_: list[str] = []
        self.bank_: np.ndarray | None = None  # reference embeddings for reject_score="distance"
        self.bank_codes_: np.ndarray | None = None
        self.distance_thresholds_: np.ndarray | None = None

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
        domain_key: str | None = None,
    ) -> "ScNym":
        """Train on the labelled ``reference``; with a ``query``, semi-supervised and adversarial.

        ``domain_key`` names an obs column giving each cell's domain (e.g. the
        technology or batch) in the reference and, if present, the query: the
        adversary then separates all those domains (the paper's multi-domain
        training). Without it the reference is one domain and the query another.
        """
        timer = Timer()
        cfg = self.config
        with timer("preprocess_s"):
            Cr, genes_r, labels, labelled = self._read_reference(reference, labels_key, layer)
            if query is not None:
                Cq, genes_q = self._read(query, query_layer, "query")
                genes = shared_genes(genes_r, genes_q)
                overlap = gene_overlap(genes_r, genes_q, what="query", warn=False)  # training uses the shared genes
                Xq = self._transform(Cq, genes_q, genes)
            else:
                genes, overlap, Cq, Xq = genes_r, None, None, None
            Xr = self._transform(Cr, genes_r, genes)
            dom_r, dom_q, domains = _domains(reference, query, domain_key)
        Xr, labels, dom_r = Xr[labelled], labels[labelled], dom_r[labelled]
        if cfg.n_top_genes is not None and cfg.n_top_genes < len(genes):
            with timer("preprocess_s"):
                with_query = Xq is not None and cfg.top_genes_from == "both"
                if cfg.top_genes_flavor == "seurat_v3":  # ranks raw counts of the shared genes
                    rank_r = align_columns(Cr, genes_r, genes)[labelled]
                    rank_q = align_columns(Cq, genes_q, genes) if with_query else None
                else:  # ranks log-CPM
                    rank_r, rank_q = Xr, Xq if with_query else None
                keep = _top_genes(rank_r, rank_q, cfg.n_top_genes, cfg.top_genes_flavor)
                genes, Xr = pd.Index(genes)[keep], Xr[:, keep].tocsr()
                Xq = None if Xq is None else Xq[:, keep].tocsr()
        classes = sorted(pd.unique(labels).tolist())
        y = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
        self.genes_, self.classes_, self.domains_ = pd.Index(genes), classes, domains
        with timer("train_s"):
            val_probs, val_y = self._train(Xr, y, dom_r, Xq, dom_q)
        self._fit_validation(val_probs, val_y)
        self._fit_distance_rejection(Xr, y)
        self.fit_info_.update(
            {
                "n_reference_cells": int(Xr.shape[0]),
                "n_query_cells": 0 if Xq is None else int(Xq.shape[0]),
                "n_genes": int(len(genes)),
                "domains": domains,
                "reference_gene_overlap": overlap,
                "timings": timer.times,
            }
        )
        return self

    def _train(self, Xr, y, dom_r, Xq, dom_q) -> np.ndarray:
        cfg, dev = self.config, self.device
        gen = seed_everything(self.seed)
        rng = make_rng(self.seed)
        K, G = len(self.classes_), Xr.shape[1]
        train_idx, val_idx = split_indices(y, cfg.val_fraction, rng)
        net = ScNymNet(G, K, cfg.n_hidden, cfg.n_hidden_layers, cfg.dropout).to(dev)
        semi = Xq is not None and cfg.use_ssl
        adversarial = cfg.use_adversary and len(self.domains_) > 1 and (Xq is not None or len(set(dom_r)) > 1)
        params = [{"params": net.parameters()}]
        adv = None
        if adversarial:
            adv = DomainAdversary(cfg.n_hidden, len(self.domains_)).to(dev)
            params.append({"params": adv.parameters()})
        opt = torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        modules = {"net": net} | ({"adv": adv} if adv is not None else {})
        stopper = EarlyStopping(cfg.patience, min(cfg.min_epochs, max(cfg.n_epochs - 1, 0)))
        history = History()
        sampler = InfiniteSampler(Xq.shape[0], cfg.batch_size, rng) if Xq is not None else None
        y_t = torch.as_tensor(y, device=dev)
        dom_r_t = torch.as_tensor(dom_r, device=dev)
        dom_q_t = None if dom_q is None else torch.as_tensor(dom_q, device=dev)
        bar = progress(cfg.n_epochs, self.verbose, "scNym")
        epoch = 0
        for epoch in range(cfg.n_epochs):
            net.train()
            if adv is not None:
                adv.train()
            w_ssl = ramp_weight(epoch, cfg.ssl_max_weight, cfg.ssl_ramp_epochs, cfg.ssl_ramp) if semi else 0.0
            w_adv = ramp_weight(epoch, cfg.adv_max_weight, cfg.adv_ramp_epochs, cfg.adv_ramp)
            sums = np.zeros(4)
            if cfg.balanced_classes:
                w = 1.0 / np.bincount(y[train_idx], minlength=K)[y[train_idx]]
                order = rng.choice(len(train_idx), size=len(train_idx), replace=True, p=w / w.sum())
                batches = [order[b] for b in epoch_batches(len(order), cfg.batch_size, rng, shuffle=False)]
            else:
                batches = epoch_batches(len(train_idx), cfg.batch_size, rng)
            for b in batches:
                idx = train_idx[b]
                x = densify(Xr, idx, dev)
                yb = F.one_hot(y_t[idx], K).float()
                if Xq is not None:
                    qi = next(sampler)
                    u = densify(Xq, qi, dev)
                    du = dom_q_t[qi]
                else:
                    u = du = None
                losses = self._step(net, adv, x, yb, dom_r_t[idx], u, du, w_ssl, w_adv, semi, gen, rng)
                opt.zero_grad(set_to_none=True)
                losses[0].backward()
                opt.step()
                sums += [float(v) for v in losses[1:]]
            sums /= max(len(batches), 1)
            val_loss = self._val_loss(net, Xr, y, val_idx) if len(val_idx) else sums[1]
            history.record(
                loss=sums[0], ce=sums[1], ssl=sums[2], adv=sums[3], val_ce=val_loss, w_ssl=w_ssl, w_adv=w_adv
            )
            bar.update(1)
            bar.set_postfix(loss=f"{sums[0]:.3f}", val=f"{val_loss:.3f}")
            if stopper.step(epoch, val_loss, modules):
                break
        bar.close()
        stopper.restore(modules)
        net.eval()
        self.net_, self.adversary_ = net, adv
        self.history_ = history.to_dict()
        self.fit_info_.update(
            {
                "epochs_trained": epoch + 1,
                "best_epoch": stopper.best_epoch,
                "semi_supervised": semi,
                "adversarial": adversarial,
            }
        )
        logger.info("scNym trained %d epochs (best %s)", epoch + 1, stopper.best_epoch)
        if len(val_idx) == 0:
            return None, None
        probs, _ = self._predict_arrays(Xr[val_idx])
        return probs, y[val_idx]

    def _step(self, net, adv, x, yb, dx, u, du, w_ssl, w_adv, semi, gen, rng):
        """One training step: (total with grad, then detached total, ce, ssl, adv)."""
        cfg = self.config
        zero = x.new_zeros(())
        x_aug = mask_genes(x, cfg.mask_fraction, gen)
        if semi:
            net.eval()
            with torch.no_grad():
                p = F.softmax(net(u), dim=1)
            net.train()
            conf = p.max(dim=1).values >= (cfg.pseudolabel_min_confidence if cfg.discovery else 0.0)
            z = sharpen(p, cfg.temperature)
            W = torch.cat([u[conf], x_aug])
            Q = torch.cat([z[conf], yb])
            lam = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha, size=len(W))
            lam = torch.as_tensor(np.maximum(lam, 1 - lam), dtype=x.dtype, device=x.device)[:, None]
            perm = torch.as_tensor(rng.permutation(len(W)), device=x.device)
            Wm, Qm = lam * W + (1 - lam) * W[perm], lam * Q + (1 - lam) * Q[perm]
            n_conf = int(conf.sum())
            u_in = torch.cat([Wm[:n_conf], u[~conf]])
            u_tgt = torch.cat([Qm[:n_conf], z[~conf]])
            u_mask = torch.cat([torch.ones(n_conf, device=x.device), torch.zeros(int((~conf).sum()), device=x.device)])
            x_in, x_tgt = Wm[n_conf:], Qm[n_conf:]
            u_dan = u[conf] if cfg.discovery else u
            du_dan = du[conf] if cfg.discovery else du
        else:
            x_in, x_tgt = x_aug, yb
            u_in = u_dan = None
            u_dan = u if (u is not None) else None
            du_dan = du
        dan_x = torch.cat([x_aug, u_dan]) if u_dan is not None else x_aug
        dan_d = torch.cat([dx, du_dan]) if u_dan is not None else dx
        use_adv = adv is not None
        parts = [x_in] + ([u_in] if u_in is not None else []) + ([dan_x] if use_adv else [])
        sizes = [len(p_) for p_ in parts]
        # BatchNorm cannot normalise a train-mode batch of one cell (a query of one cell): such a step goes
        # through the network in one joint pass
        if cfg.joint_pass or min(sizes) < 2:
            h_all = net.embed(torch.cat(parts))
            hs = list(torch.split(h_all, sizes))
        else:
            hs = [net.embed(p_) for p_ in parts]
        l_ce = soft_cross_entropy(net.classifier(hs[0]), x_tgt)
        l_ssl = zero
        if u_in is not None:
            pu = F.softmax(net.classifier(hs[1]), dim=1)
            l_ssl = (((pu - u_tgt) ** 2).sum(dim=1) * u_mask).mean()
        l_adv = zero
        if use_adv and len(dan_x) > 0:
            l_adv = F.cross_entropy(adv(grad_reverse(hs[-1], w_adv)), dan_d)
        total = l_ce + w_ssl * l_ssl + l_adv
        return total, total.detach(), l_ce.detach(), l_ssl.detach(), l_adv.detach()

    @torch.no_grad()
    def _val_loss(self, net, X, y, idx) -> float:
        net.eval()
        tot, n = 0.0, 0
        for sl, xb in iter_dense(X[idx], 1024, self.device):
            yb = torch.as_tensor(y[idx][sl], device=self.device)
            tot += float(F.cross_entropy(net(xb), yb, reduction="sum"))
            n += len(yb)
        net.train()
        return tot / max(n, 1)

    def _fit_distance_rejection(self, Xr, y) -> None:
        """Reference embeddings (a seeded random subset of at most ``reject_max_reference`` cells) and the
        per-class k-NN distance thresholds of ``reject_score="distance"``; always kept, so a saved model can
        switch scores at prediction time."""
        cfg = self.config
        self.bank_, self.bank_codes_, self.distance_thresholds_ = None, None, None
        if Xr.shape[0] < 2:
            return
        keep = np.arange(Xr.shape[0])
        if len(keep) > cfg.reject_max_reference:
            keep = np.sort(make_rng(self.seed + 1).choice(len(keep), cfg.reject_max_reference, replace=False))
        _, emb = self._predict_arrays(Xr[keep])
        self.bank_, self.bank_codes_ = emb.astype(np.float32), y[keep].astype(np.int64)
        self.distance_thresholds_ = distance_thresholds(
            self.bank_, self.bank_codes_, len(self.classes_), cfg.reject_neighbors, cfg.outlier_fraction
        )

    def _rejected(self, probs, embedding):
        cfg = self.config
        score = cfg.rejection_score
        if score == "distance" and self.bank_ is None:
            if cfg.reject_score != "auto":
                raise ValueError(
                    "reject_score='distance' needs the reference embeddings, which this model does not "
                    "have (saved by an older pybridge, or a reference of one cell); refit, or use "
                    "reject_score='confidence'."
                )
            logger.warning(
                "scnym: this model has no reference embeddings (saved by an older pybridge); "
                "rejecting by confidence thresholds instead of distance."
            )
            score = "confidence"
        if score == "confidence":
            rejected, _ = super()._rejected(probs, embedding)
            return rejected, {"reject_score": "confidence"}
        d = knn_distances(embedding, self.bank_, cfg.reject_neighbors)
        pred = probs.argmax(axis=1)
        tau = np.maximum(
            self.distance_thresholds_, query_distance_thresholds(d, pred, len(self.classes_), cfg.reject_nmads)
        )
        # the per-class bounds that applied to this query (inf: no bound, too few cells) go into the params
        return d > tau[pred], {"reject_score": "distance", "distance_thresholds": [float(t) for t in tau]}

    # ---------------------------------------------------------------- prediction
    @torch.no_grad()
    def _predict_arrays(self, X):
        net = self.net_
        net.eval()
        probs, emb = [], []
        for _, xb in iter_dense(X, 1024, self.device):
            h = net.embed(xb, pre_relu=True)
            probs.append(F.softmax(net.classifier(F.relu(h)), dim=1).cpu().numpy())
            emb.append(h.cpu().numpy())
        return np.concatenate(probs).astype(np.float64), np.concatenate(emb)

    def _result(self, obs_names, probs, embedding, overlap, predict_seconds):
        res = super()._result(obs_names, probs, embedding, overlap, predict_seconds)
        if self.config.min_confidence > 0:
            low = res.confidence < self.config.min_confidence
            res.labels = res.labels.copy()
            res.labels[low] = UNASSIGNED
            res.rejection = True
        return res

    # -------------------------------------------------------------- saliency
    def integrated_gradients(
        self, adata, target_class: str, *, layer=None, cells=None, n_steps: int = 100, max_cells: int = 300
    ) -> pd.Series:
        """Integrated-gradient saliency of ``target_class`` per gene (the paper's IG with a zero baseline).

        Averages over up to ``max_cells`` cells: those selected by the boolean
        ``cells`` mask, or by default the cells predicted as ``target_class``.
        Returns a Series indexed by the model's genes, sorted from most to least salient.
        """
        self._check_fitted()
        if target_class not in self.classes_:
            raise ValueError(f"{target_class!r} is not one of the model's classes: {self.classes_}.")
        k = self.classes_.index(target_class)
        X, _ = self.prepare_query(adata, layer)
        if cells is None:
            probs, _ = self._predict_arrays(X)
            cells = probs.argmax(1) == k
        idx = np.flatnonzero(np.asarray(cells))
        if len(idx) == 0:
            raise ValueError(f"No cells selected for class {target_class!r}; pass cells= explicitly.")
        idx = make_rng(self.seed).permutation(idx)[:max_cells]
        net = self.net_.eval()
        x = densify(X, idx, self.device)
        total = torch.zeros_like(x)
        for m in range(1, n_steps + 1):
            xs = (m / n_steps * x).requires_grad_(True)
            p = F.softmax(net(xs), dim=1)[:, k].sum()
            (g,) = torch.autograd.grad(p, xs)
            total += g
        ig = (x * total / n_steps).mean(0).cpu().numpy()
        return pd.Series(ig, index=self.genes_, name=f"IG[{target_class}]").sort_values(ascending=False)

    # ---------------------------------------------------------------- persistence
    def _state(self):
        states = {"net": self.net_.state_dict()}
        if self.adversary_ is not None:
            states["adv"] = self.adversary_.state_dict()
        if self.bank_ is not None:
            states["bank"] = {"embedding": torch.from_numpy(self.bank_), "codes": torch.from_numpy(self.bank_codes_)}
        return join_states(**states)

    def _extra_meta(self):
        thr = self.distance_thresholds_
        return {
            "domains": self.domains_,
            "history": self.history_,
            "distance_thresholds": None if thr is None else [float(t) if np.isfinite(t) else None for t in thr],
        }

    def _load_state(self, tensors, meta):
        cfg = self.config
        net = ScNymNet(len(self.genes_), len(self.classes_), cfg.n_hidden, cfg.n_hidden_layers, cfg.dropout)
        net.load_state_dict(split_state(tensors, "net"))
        self.net_ = net.to(self.device).eval()
        self.domains_ = list(meta.get("domains", []))
        adv_state = split_state(tensors, "adv")
        if adv_state:
            adv = DomainAdversary(cfg.n_hidden, len(self.domains_))
            adv.load_state_dict(adv_state)
            self.adversary_ = adv.to(self.device).eval()
        self.history_ = meta.get("history", {})
        bank = split_state(tensors, "bank")
        thr = meta.get("distance_thresholds")
        if bank and thr is not None:
            self.bank_ = bank["embedding"].float().numpy()
            self.bank_codes_ = bank["codes"].long().numpy()
            self.distance_thresholds_ = np.array([np.inf if t is None else t for t in thr], dtype=float)
