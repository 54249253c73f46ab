"""CICL: cluster-aware iterative contrastive learning for clustering (Jiang, Wang, Guan & Zhou).

Pipeline (paper, Fig. 1 and Algorithm 1):

1. Preprocessing as in scDeepCluster: divide each cell by its size factor
   (library size / median library size), natural ``log1p``, keep the top
   ``n_top_genes`` = 500 genes by *normalized dispersion* (Seurat-style bins
   of mean expression), z-score each gene, clipped to [-10, 10] (``max_value``;
   an addition, see below). The z-scoring is applied per minibatch on the
   device, so the matrix stays sparse.
2. Per minibatch: two views of each cell with additive Gaussian noise.
3. A shared Transformer encoder (4 post-LayerNorm layers, model width = number
   of genes, 2 heads of 512, feed-forward 1024) maps the clean view and the
   two noisy views to H, H1, H2 (H has one value per gene, i.e. 500 dims).
4. Pseudo-labels: K-means on H gives centroids C (per minibatch in the paper,
   once before training by default here, see ``pseudo_labels``); the Student-t
   kernel (alpha = 1) gives soft assignments q and the label ``argmax q``.
5. A projection head (G -> 1024 -> 512, ReLU) maps H1, H2 to Z1, Z2 (L2-normalised).
6. Loss = instance loss (NT-Xent, T = 0.5) + lambda (0.1) x cluster-aware loss; Adam.
7. After training, K-means on the clean-view embedding of all cells gives the
   clusters; the Student-t soft assignment to those centroids is the
   per-cell confidence (``max_j q_ij``) and the probability matrix.

Choices where the paper and its reference code differ (each is an option of
:class:`CICLConfig`). Labels are never used during training or to pick an
epoch; the comparisons behind the defaults are in ``docs/methods/cicl.md``:

* ``attention``: read literally, the paper's attention equations mix the cells
  of a minibatch (each cell a token of G values): ``"batch"``. The reference
  code feeds each cell as a sequence of length one, where the softmax over a
  single key is 1 and the block reduces to a residual MLP: ``"cell"``
  (default; an embedding then depends only on the cell itself, not on which
  other cells share its minibatch). With ``"cell"`` the query/key projections
  are not built, since they cannot change the output.
* ``pseudo_labels``: K-means on each minibatch's embedding (paper, Algorithm 1:
  ``"batch"``) or once, on the untrained encoder's embedding of all cells, with
  the centroids then fixed and every cell re-assigned to the nearest one at each
  step (reference code: ``"once"``, default). With ``"batch"`` the centroids,
  and so the pseudo-labels, can jump between steps; ``"once"`` keeps the
  centroids fixed and is cheaper.
* ``instance_loss``: the paper's symmetric NT-Xent with 2B - 1 candidates per
  anchor (``"ntxent"``, default) or the code's one-directional InfoNCE with
  cross-view negatives only (``"infonce"``).
* ``cluster_loss``: the paper's Eq. 15 puts only other-cluster pairs in the
  denominator, which is unbounded below and undefined when a minibatch has a
  single pseudo-cluster. pybridge uses the safe form
  ``-log(sum_pos / (sum_pos + sum_neg))`` with the same positives as Eq. 15
  (own partner, and every same-pseudo-cluster cell in both views):
  ``"supcon"`` (default). ``"fne"`` is the code's variant: the own partner is
  the only positive and same-cluster cells are removed from the negatives,
  averaged per pseudo-cluster and summed over clusters.
* ``augmentation``: ``"paper"`` adds N(0, 1) noise mapped linearly (per cell)
  onto [0, 1]; ``"code"`` adds N(0, ``noise_std``^2) to a random
  ``noise_fraction`` of the genes of each cell. Both are drawn afresh for every
  minibatch (Algorithm 1 draws them inside the loop; the reference code draws
  the ``"code"`` noise once, which would need two dense cells x genes copies).
* Optimisation: the paper's Table 2 says 1000 epochs at lr 1e-5; the code runs
  51 epochs with lr 1e-4 for the encoder and 1e-5 for the projection head.
  Defaults here: 50 epochs, lr 1e-4 for both (``proj_lr=None``); the paper's
  setting is ``n_epochs=1000, lr=1e-5``, the code's ``n_epochs=51,
  proj_lr=1e-5`` (the code also puts weight decay 1e-3 on the encoder;
  ``weight_decay`` here, default 0, applies to both parts).
* Network sizes: the projection head's hidden width is the paper's 1024 (the
  code: 2048, ``proj_hidden=2048``); the encoder's dropout of 0.2 is the
  code's (the paper states none; ``dropout=0`` removes it).
* ``max_value``: the paper z-scores without a bound. A gene detected in a few of
  N cells then reaches z of about sqrt(N) (about 32 for 1000 cells) and such
  genes dominate the distances. Default 10 (scanpy's usual clip); ``None`` is
  the paper's form. (The K estimator works on the unclipped z-scores.)
* The reference code keeps the epoch with the best *ground-truth* ARI. pybridge
  never looks at labels: the final epoch's encoder is used.
* The clean view is encoded in eval mode without gradient (no dropout) to
  compute pseudo-labels; the code runs it in train mode.
* ``norm``: where the encoder's per-cell LayerNorm sits (see :class:`EncoderLayer`).
  ``"post"`` (paper Eq. 5 and 7, default): every block ends in a LayerNorm,
  so the embedding keeps nothing of a cell's overall scale across genes.
  ``"pre"`` normalises only the input of each sublayer and leaves the residual
  stream (and the output) at the input's scale; ``"none"`` drops LayerNorm.
  The paper's form is the default; ``"none"`` avoids the limitation below.

Known limitation: the per-cell LayerNorm of the default post-LN encoder
discards each cell's overall scale, so a set dominated by one type with many
rare ones can cluster far worse than K-means on PCA of the same input
(K-means on LayerNorm(z) alone, with no network, already loses most of the
structure there); ``norm="none"`` avoids that but is less stable on small sets.

Number of clusters: the paper uses the true number of cell types. With
``n_clusters=None`` pybridge estimates K once, before training, on the top
``n_pcs`` = 10 principal components of the preprocessed (z-scored HVG) data;
see :func:`estimate_n_clusters`. Default ``k_estimator="eigengap"``: the
largest gap between consecutive eigenvalues of the normalised Laplacian of a
15-nearest-neighbour graph, K in ``[k_min, k_max]`` = [2, 20]. The alternative
``"silhouette"`` runs K-means for every K and keeps the best mean silhouette.
Both estimators are rough; pass ``n_clusters`` when the number of types is
known.

Measurements behind these defaults (ARI per dataset, seeds, K estimates):
``docs/methods/cicl.md``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..._io import join_states, split_state
from ..._settings import logger
from ...data import densify, epoch_batches, gene_overlap, get_counts, iter_dense
from ...result import ClusteringResult
from ...train import History, Timer, make_rng, progress, seed_everything
from .._base import Clusterer, _version
from .._clustering import estimate_n_clusters, kmeans, size_order, student_t
from ._module import (
    NORMS,
    CICLEncoder,
    ProjectionHead,
    cluster_fne,
    cluster_supcon,
    info_nce,
    nt_xent,
    ntxent_supcon,
    similarities,
)
from ._preprocess import _apply_preprocessing, _fit_preprocessing, _pca_scores, _Prep, _Scaler

_CHOICES = {
    "attention": ("cell", "batch"),
    "norm": NORMS,
    "pseudo_labels": ("batch", "once"),
    "instance_loss": ("ntxent", "infonce"),
    "cluster_loss": ("supcon", "fne"),
    "augmentation": ("paper", "code"),
    "k_estimator": ("silhouette", "eigengap"),
}


@dataclass(frozen=True)
class CICLConfig:
    """CICL hyperparameters. Paper values unless noted (see the module docstring)."""

    n_clusters: int | None = None  # None: estimated with ``k_estimator``
    # preprocessing
    n_top_genes: int = 500
    max_value: float | None = 10.0  # clip z-scores to [-10, 10]; None = no clipping (paper)
    # encoder (paper Table 2 / reference code)
    attention: str = "cell"
    norm: str = "post"  # LayerNorm placement: "post" (paper), "pre" or "none" (see EncoderLayer)
    n_layers: int = 4
    n_heads: int = 2
    head_dim: int = 512
    ffn_dim: int = 1024
    dropout: float = 0.2  # not in the paper; the code's value
    # projection head
    proj_hidden: int = 1024  # paper (code: 2048)
    proj_dim: int = 512
    # augmentation
    augmentation: str = "paper"
    noise_std: float = 0.5  # "code" augmentation
    noise_fraction: float = 0.8  # "code" augmentation
    # pseudo-labels and losses
    pseudo_labels: str = "once"  # code; paper: "batch"
    alpha: float = 1.0  # Student-t degrees of freedom
    temperature: float = 0.5
    lam: float = 0.1  # weight of the cluster-aware loss
    instance_loss: str = "ntxent"
    cluster_loss: str = "supcon"
    # optimisation
    lr: float = 1e-4  # encoder (code; paper 1e-5)
    proj_lr: float | None = None  # projection head; None = lr
    weight_decay: float = 0.0
    batch_size: int = 6000
    n_epochs: int = 50  # code: 51; paper Table 2: 1000
    # clustering
    kmeans_n_init: int = 10  # final K-means (and K estimation)
    kmeans_n_init_train: int = 3  # per-minibatch K-means during training
    kmeans_max_iter: int = 300
    # estimating K
    k_estimator: str = "eigengap"
    k_min: int = 2
    k_max: int = 20
    n_pcs: int = 10  # principal components the K estimator works on
    k_neighbors: int = 15  # neighbours of the "eigengap" graph

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {getattr(self, name)!r}.")
        if self.n_clusters is not None:
            if isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, (int, np.integer)):
                raise ValueError(f"n_clusters must be an integer >= 2 or None (estimate it), not {self.n_clusters!r}.")
            if self.n_clusters < 2:
                raise ValueError(f"n_clusters must be at least 2, not {self.n_clusters}.")
        positive = (
            "n_top_genes",
            "n_layers",
            "n_heads",
            "head_dim",
            "ffn_dim",
            "proj_hidden",
            "proj_dim",
            "n_epochs",
            "kmeans_n_init",
            "kmeans_n_init_train",
            "kmeans_max_iter",
            "n_pcs",
            "k_neighbors",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, not {getattr(self, name)!r}.")
        if self.batch_size < 4:
            raise ValueError("batch_size must be at least 4 (contrastive losses need several cells per batch).")
        if self.max_value is not None and self.max_value <= 0:
            raise ValueError("max_value (z-score clipping) must be positive or None.")
        if not 0 <= self.dropout < 1:
            raise ValueError("dropout must be in [0, 1).")
        if not 0 < self.noise_fraction <= 1:
            raise ValueError("noise_fraction must be in (0, 1].")
        if self.temperature <= 0 or self.alpha <= 0:
            raise ValueError("temperature and alpha must be positive.")
        if self.lam < 0:
            raise ValueError("lam (the cluster-aware loss weight) must be >= 0.")
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"Need 2 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}.")


# ============================================================================ estimator
class CICL(Clusterer):
    """CICL clustering estimator.

    ``CICL(n_clusters=8).fit(adata)`` trains the encoder on ``adata``'s raw counts
    (``X`` or ``layer``) and clusters it (:attr:`result_`, also returned by
    :meth:`fit_predict`); :meth:`predict` assigns new cells to the learned clusters;
    :meth:`transform` returns the embedding. ``save`` / ``load`` use safetensors + JSON.

    Parameters
    ----------
    config
        A :class:`CICLConfig` or dict; keyword ``overrides`` replace single options
        (``n_clusters`` is one of them; ``None`` estimates K).
    seed
        Seeds the weights, minibatch order, noise, dropout and every K-means.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    verbose
        Show a progress bar (default: ``pybridge.settings.verbose``).
    """

    method = "cicl"
    config_cls = CICLConfig

    def __init__(self, config=None, *, seed: int = 0, device: str = "auto", verbose: bool | None = None, **overrides):
        super().__init__(config, seed=seed, device=device, verbose=verbose, **overrides)
        self.encoder_: CICLEncoder | None = None
        self.head_: ProjectionHead | None = None
        self.prep_: _Prep | None = None
        self.centers_: torch.Tensor | None = None
        self.n_clusters_: int | None = None
        self.k_scores_: dict[int, float] | None = None
        self.result_: ClusteringResult | None = None
        #: optional monitor, called after every epoch as ``f(epoch, history, embed)`` where ``embed()``
        #: returns the current clean-view embedding of the training cells (numpy). Training never reads it back.
        self.epoch_callback = None

    # ------------------------------------------------------------------ helpers
    def _is_fitted(self) -> bool:
        return self.encoder_ is not None

    def _encode(self, X: sp.csr_matrix, scaler: _Scaler) -> torch.Tensor:
        """Clean-view embedding of all rows (eval mode), on the device."""
        enc = self.encoder_.eval()
        chunk = self.config.batch_size if self.config.attention == "batch" else 2048
        out = []
        with torch.no_grad():
            for _, xb in iter_dense(X, chunk, self.device):
                out.append(enc(scaler(xb)))
        return torch.cat(out)

    def _assign(self, h: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        q = student_t(h, self.centers_, self.config.alpha)
        return q.argmax(1).cpu().numpy(), q.cpu().numpy().astype(np.float64)

    # ------------------------------------------------------------------- fitting
    def fit(self, adata, *, layer: str | None = None) -> "CICL":
        """Train on ``adata`` (raw counts in ``X`` or ``layer``) and cluster it."""
        timer = Timer()
        cfg = self.config
        t0 = time.perf_counter()
        with timer("preprocess_s"):
            X = get_counts(adata, layer, what="data")
            n = X.shape[0]
            if n < 10:
                raise ValueError(f"CICL needs at least 10 cells, got {n}.")
            genes = pd.Index(adata.var_names).astype(str)
            self.prep_, Xh = _fit_preprocessing(X, genes, cfg.n_top_genes)
        with timer("estimate_k_s"):
            if cfg.n_clusters is None:
                pcs = _pca_scores(Xh, _Scaler(self.prep_, "cpu", None), cfg.n_pcs)  # unclipped z-scores
                k, self.k_scores_ = estimate_n_clusters(
                    pcs,
                    method=cfg.k_estimator,
                    k_min=cfg.k_min,
                    k_max=cfg.k_max,
                    seed=self.seed,
                    n_init=cfg.kmeans_n_init,
                    n_neighbors=cfg.k_neighbors,
                )
                logger.info("cicl: estimated %d clusters (%s)", k, cfg.k_estimator)
            else:
                k = int(cfg.n_clusters)
                if k >= n:
                    raise ValueError(f"n_clusters={k} must be smaller than the number of cells ({n}).")
        self.n_clusters_ = k
        if cfg.batch_size < 2 * k and n >= 2 * k:
            raise ValueError(f"batch_size={cfg.batch_size} is too small for {k} clusters; use at least {2 * k}.")
        with timer("train_s"):
            self._train(Xh, k)
        with timer("cluster_s"):
            scaler = _Scaler(self.prep_, self.device, self.config.max_value)
            h = self._encode(Xh, scaler)
            gen = torch.Generator().manual_seed(self.seed + 1)
            labels, centers, inertia = kmeans(
                h, k, n_init=cfg.kmeans_n_init, max_iter=cfg.kmeans_max_iter, generator=gen
            )
            perm = size_order(labels.cpu().numpy(), k)
            self.centers_ = centers[torch.as_tensor(np.argsort(perm), device=centers.device)]
            _, q = self._assign(h)
            labels = perm[labels.cpu().numpy()]
        self.fit_info_.update(
            {
                "n_cells": int(n),
                "n_genes_input": int(len(genes)),
                "n_genes_model": int(len(self.prep_.genes)),
                "n_clusters": int(k),
                "n_clusters_estimated": cfg.n_clusters is None,
                "k_scores": None if self.k_scores_ is None else {str(a): b for a, b in self.k_scores_.items()},
                "final_inertia": float(inertia),
                "timings": {**timer.times, "total_s": time.perf_counter() - t0},
            }
        )
        self.result_ = self._result(adata.obs_names, labels, q, h.cpu().numpy())
        return self

    def fit_predict(self, adata, *, layer: str | None = None) -> ClusteringResult:
        """Fit and return the clustering of ``adata``."""
        return self.fit(adata, layer=layer).result_

    def _augment(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.config
        noise = torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)
        if cfg.augmentation == "paper":
            lo, hi = noise.min(1, keepdim=True).values, noise.max(1, keepdim=True).values
            return x + (noise - lo) / (hi - lo).clamp_min(1e-12)
        n_genes = x.shape[1]
        n_noisy = max(1, int(cfg.noise_fraction * n_genes))
        pick = torch.rand(x.shape, generator=gen, device=gen.device).argsort(1)[:, :n_noisy].to(x.device)
        mask = torch.zeros_like(x).scatter_(1, pick, 1.0)
        return x + cfg.noise_std * noise * mask

    def _train(self, Xh: sp.csr_matrix, k: int) -> None:
        cfg, dev = self.config, self.device
        seed_everything(self.seed)
        rng = make_rng(self.seed)
        noise_gen = torch.Generator(device=dev).manual_seed(self.seed)
        km_gen = torch.Generator().manual_seed(self.seed)
        G = Xh.shape[1]
        enc = CICLEncoder(
            G, cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.ffn_dim, cfg.dropout, cfg.attention, cfg.norm
        ).to(dev)
        head = ProjectionHead(G, cfg.proj_hidden, cfg.proj_dim).to(dev)
        self.encoder_, self.head_ = enc, head
        opt = torch.optim.Adam(
            [
                {"params": enc.parameters(), "lr": cfg.lr},
                {"params": head.parameters(), "lr": cfg.proj_lr if cfg.proj_lr is not None else cfg.lr},
            ],
            weight_decay=cfg.weight_decay,
        )
        scaler = _Scaler(self.prep_, dev, cfg.max_value)
        fixed_centers = None
        if cfg.pseudo_labels == "once":
            h0 = self._encode(Xh, scaler)
            _, fixed_centers, _ = kmeans(
                h0, k, n_init=cfg.kmeans_n_init, max_iter=cfg.kmeans_max_iter, generator=km_gen
            )
        instance = nt_xent if cfg.instance_loss == "ntxent" else info_nce
        cluster = cluster_supcon if cfg.cluster_loss == "supcon" else cluster_fne
        # the default pair of losses in one pass (see ntxent_supcon); needs temperature >= 0.05
        fused = (
            (cfg.instance_loss, cfg.cluster_loss) == ("ntxent", "supcon") and cfg.lam > 0 and cfg.temperature >= 0.05
        )
        history = History()
        n = Xh.shape[0]
        bar = progress(cfg.n_epochs, self.verbose, "CICL")
        for _epoch in range(cfg.n_epochs):
            sums = np.zeros(3)
            batches = epoch_batches(n, cfg.batch_size, rng, min_size=4)
            for idx in batches:
                x = scaler(densify(Xh, idx, dev))
                enc.eval()
                with torch.no_grad():
                    h = enc(x)
                    if fixed_centers is None:
                        _, centers, _ = kmeans(
                            h,
                            min(k, len(idx)),
                            n_init=cfg.kmeans_n_init_train,
                            max_iter=cfg.kmeans_max_iter,
                            generator=km_gen,
                        )
                    else:
                        centers = fixed_centers
                    pseudo = student_t(h, centers, cfg.alpha).argmax(1)
                enc.train()
                head.train()
                x1, x2 = self._augment(x, noise_gen), self._augment(x, noise_gen)
                if cfg.attention == "cell":
                    h12 = enc(torch.cat([x1, x2]))
                else:
                    h12 = torch.cat([enc(x1), enc(x2)])
                z1, z2 = head(h12).split(len(idx))
                if fused:
                    l_ins, l_clu = ntxent_supcon(z1, z2, pseudo, cfg.temperature)
                else:
                    sim = similarities(z1, z2, cfg.temperature)
                    l_ins = instance(sim)
                    l_clu = cluster(sim, pseudo) if cfg.lam > 0 else l_ins.new_zeros(())
                loss = l_ins + cfg.lam * l_clu
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums += [float(loss.detach()), float(l_ins.detach()), float(l_clu.detach())]
            sums /= max(len(batches), 1)
            history.record(loss=sums[0], instance=sums[1], cluster=sums[2])
            if self.epoch_callback is not None:
                state = torch.get_rng_state()
                self.epoch_callback(_epoch, history.to_dict(), lambda: self._encode(Xh, scaler).cpu().numpy())
                torch.set_rng_state(state)
            bar.update(1)
            bar.set_postfix(loss=f"{sums[0]:.4f}")
        bar.close()
        enc.eval()
        head.eval()
        self.history_ = history.to_dict()
        self.fit_info_["epochs_trained"] = cfg.n_epochs
        self.fit_info_["steps"] = cfg.n_epochs * len(epoch_batches(n, cfg.batch_size, make_rng(0), min_size=4))
        logger.info("cicl: trained %d epochs, final loss %.4f", cfg.n_epochs, self.history_["loss"][-1])

    # ---------------------------------------------------------------- prediction
    def _prepare(self, adata, layer):
        self._check_fitted()
        X = get_counts(adata, layer, what="data")
        genes = pd.Index(adata.var_names).astype(str)
        overlap = gene_overlap(self.prep_.genes, genes, what="data")
        return _apply_preprocessing(X, genes, self.prep_), overlap

    def transform(self, adata, *, layer: str | None = None) -> np.ndarray:
        """Encoder embedding (cells x model genes) of ``adata``."""
        Xh, _ = self._prepare(adata, layer)
        return self._encode(Xh, _Scaler(self.prep_, self.device, self.config.max_value)).cpu().numpy()

    def predict(self, adata, *, layer: str | None = None) -> ClusteringResult:
        """Assign the cells of ``adata`` to the learned clusters (nearest centroid / Student-t)."""
        t0 = time.perf_counter()
        Xh, overlap = self._prepare(adata, layer)
        h = self._encode(Xh, _Scaler(self.prep_, self.device, self.config.max_value))
        labels, q = self._assign(h)
        return self._result(
            adata.obs_names, labels, q, h.cpu().numpy(), overlap=overlap, predict_s=time.perf_counter() - t0
        )

    def _result(self, obs_names, labels, q, embedding, overlap=None, predict_s=None) -> ClusteringResult:
        params = {
            **self._base_params(),
            "n_clusters": int(self.n_clusters_),
            "training": {k: v for k, v in self.fit_info_.items() if k != "timings"},
            "timings": {**self.fit_info_.get("timings", {}), **({"predict_s": predict_s} if predict_s else {})},
            "history": self.history_,
            "genes": list(self.prep_.genes),
            "gene_overlap": overlap,
            "version": _version(),
        }
        return ClusteringResult(
            obs_names=pd.Index(obs_names),
            clusters=np.asarray(labels, dtype=np.int64),
            confidence=q.max(axis=1),
            probabilities=q,
            embedding=embedding,
            method=self.method,
            params=params,
        )

    # ---------------------------------------------------------------- persistence
    def _state(self) -> dict[str, torch.Tensor]:
        """Encoder and head weights, centroids and the preprocessing statistics."""
        tensors = join_states(enc=self.encoder_.state_dict(), head=self.head_.state_dict())
        tensors["centers"] = self.centers_
        tensors["prep.mean"] = torch.as_tensor(self.prep_.mean)
        tensors["prep.std"] = torch.as_tensor(self.prep_.std)
        return tensors

    def _meta(self) -> dict:
        return {
            "config": dataclasses.asdict(self.config),
            "genes": list(self.prep_.genes),
            "target_sum": self.prep_.target_sum,
            "n_clusters": self.n_clusters_,
            "seed": self.seed,
            "fit_info": self.fit_info_,
            "history": self.history_,
        }

    @classmethod
    def _saved_config(cls, meta: dict) -> dict:
        saved = super()._saved_config(meta)
        saved.setdefault("norm", "post")  # models saved before the option existed are post-LN
        return saved

    def _load_state(self, tensors, meta) -> None:
        cfg = self.config
        self.prep_ = _Prep(
            pd.Index(meta["genes"]).astype(str),
            tensors["prep.mean"].numpy(),
            tensors["prep.std"].numpy(),
            float(meta["target_sum"]),
        )
        G = len(self.prep_.genes)
        enc = CICLEncoder(G, cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.ffn_dim, cfg.dropout, cfg.attention, cfg.norm)
        head = ProjectionHead(G, cfg.proj_hidden, cfg.proj_dim)
        enc.load_state_dict(split_state(tensors, "enc"))
        head.load_state_dict(split_state(tensors, "head"))
        self.encoder_, self.head_ = enc.to(self.device).eval(), head.to(self.device).eval()
        self.centers_ = tensors["centers"].to(self.device)
        self.n_clusters_ = int(meta["n_clusters"])
        self.history_ = meta.get("history", {})
