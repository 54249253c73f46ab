"""NMF transfer clustering ("TransferCluster", Mieth et al., Sci Rep 2019).

A labelled *source* dataset is factorised by elastic-net NMF started from the
one-hot encoding of its labels; the k x genes dictionary is carried over to
the *target*, whose cells are fitted on it by non-negative least squares and
assigned to their largest component. The target is then mixed with that
reconstruction, X_new = theta * H_src W' + (1 - theta) * X_trg, and clustered
with SC3; theta is chosen without labels by kernel-target alignment (KTA)
between the linear kernel of X_new and that of the predicted clusters.

Steps and defaults (paper and the authors' code; see also the docstrings of
``_preprocess``, ``_nmf`` and ``_sc3``):

* pre-processing, applied to source and target separately, then the genes
  both keep: SC3's gene filter (value >= 2 in >= 6 % of cells, non-zero in
  <= 94 %) and log2(x + 1). The paper's cell filter (>= 2000 genes with value
  >= 2) is available but off by default: droplet data rarely detect 2000
  genes per cell (it would drop every cell of the Baron data), and every
  target cell should get a cluster. Cells it removes from the target are
  reported as ``"Unassigned"`` with confidence 0. The paper's simulation ran
  without the gene filter (its counts are non-zero almost everywhere).
* source NMF: alpha = 10, l1 ratio 0.75, at most 4000 iterations, tolerance
  1e-3 (the values of every experiment in the authors' scripts), on the
  paper's unscaled penalty (scikit-learn < 1.0 ``alpha``; in scikit-learn >= 1.0
  ``alpha_W = alpha / n_features``, ``alpha_H = alpha / n_samples``). As in
  the authors' code, the dictionary is first fitted with the coefficients
  fixed at the one-hot labels, then both factors are refined. Without labels
  (``labels_key=None``) the source is first clustered by NMF from an NNDSVDar
  start (the paper's "NMF clustering", ``n_source_clusters`` components, by
  default SC3's estimate of k), and those labels are used.
* ``nmf_refine`` (default True, the paper and its code): the second stage
  refines both factors from the one-hot start. That step is not convex and can
  move W_src away from the labels (argmax W_src no longer matching them).
  Components then stop standing for one cell type, which weakens the transfer
  and the matched source type; a warning says so when the ARI of argmax W_src
  against the labels (``fit_info_["source_ari"]``) is below 0.9.
  ``nmf_refine=False`` keeps W_src at the labels and fits only the dictionary
  (the elastic-net-shrunk class means).
* the NMF's coordinate-descent sweeps visit the components in a fixed order
  (the authors' code, through scikit-learn, shuffles them: ``nmf_shuffle=True``).
* target coefficients: exact NNLS (coordinate descent to the global optimum
  of the convex problem the paper states). The authors' code instead runs
  100 multiplicative updates from a random start: ``nnls_solver="multiplicative"``.
* theta grid 0, 0.1, ..., 1.0 (the simulation default of the authors' code);
  ties in KTA go to the smaller theta. At theta = 1 the target's own data are
  gone and the mixture is the NNLS partition itself, which KTA rates highly
  whether or not it is right, so with no shared cell types KTA can pick
  theta = 1 and lose the target's own structure. A grid that stops at 0.9
  (the authors used 0-0.7 for their real data) avoids this. Of the transfer
  variants, ``nmf_refine=False, thetas=[0, 0.1, ..., 0.9]`` scored best in
  pybridge's measurements; the defaults stay the paper's.
* SC3: see ``_sc3``; k is ``n_clusters`` (the paper always gives the true k),
  or SC3's Tracy-Widom estimate on the target when it is None.
* Large targets: SC3 builds several n x n matrices (distances, eigenvectors,
  consensus) and its time grows about as n^3, so like SC3's own hybrid mode
  (``svm_num_cells``) a target with more than ``svm_max_cells`` cells is
  clustered on a seeded random subset of that size (k estimation, SC3 and the
  KTA choice of theta all on the subset), and a linear SVM trained on the
  subset's mixed data (libsvm's linear C-SVM with C = 1 on standardised
  features, as e1071's ``svm`` that SC3 calls) assigns every other cell.
  SVM-assigned cells get their cluster's mean consensus confidence and soft
  assignment; the NNLS embedding and the matched source type are computed for
  every cell. Deviation: the cap is 2000 cells, not SC3's 5000
  (``svm_max_cells=5000``), because SC3 runs here once per theta (11 times by
  default). ``svm_max_cells=None`` clusters
  every cell (memory ~8 n^2 bytes per matrix).

Baselines (``mode``): ``"target"`` runs SC3 on the target alone
(TargetCluster; with a reference it uses the same shared genes as the
transfer, so it equals theta = 0), ``"concatenate"`` runs SC3 on the stacked
source and target and keeps the target's clusters (ConcatenateCluster).

Outputs: cluster ids ordered by size; a confidence per cell (mean
co-association with the other cells of its cluster in SC3's ensemble); a
soft assignment (mean co-association with each cluster, normalised); with
source labels, the source type matched to each cluster (the most frequent
binarised NMF assignment of its cells; for ConcatenateCluster the most
frequent label of the source cells in it); the NNLS coefficients on the
source dictionary as the embedding (columns = source classes).

Measurements (simulations, real pairs, timings): ``docs/methods/nmf_transfer.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..._settings import logger, resolve_device, resolve_verbose
from ...data import align_columns, check_finite_labels, gene_overlap, get_counts, get_labels
from ...data._genes import MIN_SHARED_GENES
from ...rejection import UNASSIGNED
from ...result import ClusteringResult
from ...train import Timer, progress
from .._base import Clusterer, _version, make_config
from .._clustering import relabel_by_size
from ._nmf import (
    DataOperator,
    MixedTarget,
    SourceDictionary,
    enet_nmf,
    mixed_rows,
    multiplicative_coef,
    nndsvdar,
    nnls_coef,
)
from ._preprocess import cell_filter_mask, gene_filter_mask, log2p
from ._sc3 import DISTANCES, TRANSFORMS, consensus_scores, estimate_k, kernel_target_alignment, sc3

MODES = ("transfer", "target", "concatenate")
DEFAULT_THETAS = tuple(round(0.1 * i, 1) for i in range(11))
#: KTA differences below this are rounding: e.g. a theta that only shifts every cell by the same vector
#: leaves the centred kernel, and so KTA, unchanged.
KTA_TIE = 1e-8


@dataclass(frozen=True)
class NMFTransferConfig:
    """Options of NMF transfer clustering; defaults follow the paper and its code (see the module docstring)."""

    mode: str = "transfer"  # "transfer" (TransferCluster), "target" (TargetCluster), "concatenate"
    # pre-processing (each dataset separately)
    cell_filter_min_genes: int = 0  # the paper's experiments: 2000
    cell_filter_threshold: float = 2.0
    gene_filter: bool = True
    gene_filter_threshold: float = 2.0
    gene_filter_fraction: float = 0.94
    log_transform: bool = True  # log2(x + 1)
    # source NMF
    nmf_alpha: float = 10.0
    nmf_l1_ratio: float = 0.75
    nmf_max_iter: int = 4000
    nmf_tol: float = 1e-3
    nmf_shuffle: bool = False  # shuffle the component order each sweep (the authors' code: True)
    nmf_refine: bool = True  # False: keep W_src at the one-hot labels, fit only the dictionary (step a)
    n_source_clusters: int | None = None  # label-free source: NMF rank (None: SC3's estimate)
    # target coefficients
    nnls_solver: str = "cd"  # "cd" (exact) or "multiplicative" (the authors' code)
    nnls_max_iter: int | None = None  # None: 1000 for "cd", 100 for "multiplicative"
    nnls_tol: float = 1e-6  # "cd": relative projected-gradient; "multiplicative": 1e-3 is the authors'
    # mixing and theta selection
    thetas: tuple = DEFAULT_THETAS
    # SC3
    distances: tuple = DISTANCES
    transforms: tuple = TRANSFORMS
    d_min_fraction: float = 0.04
    d_max_fraction: float = 0.07
    max_dims: int = 15
    kmeans_n_init: int = 10
    kmeans_max_iter: int = 300
    # SC3's hybrid mode for large targets: cluster this many random cells, assign the rest with a linear SVM
    svm_max_cells: int | None = 2000  # None: cluster every cell (n x n matrices)

    def __post_init__(self):
        for name in (
            "cell_filter_min_genes",
            "nmf_max_iter",
            "n_source_clusters",
            "nnls_max_iter",
            "max_dims",
            "kmeans_n_init",
            "kmeans_max_iter",
            "svm_max_cells",
        ):  # whole numbers from R arrive as doubles
            v = getattr(self, name)
            if isinstance(v, float) and v.is_integer():
                object.__setattr__(self, name, int(v))
        for name in ("thetas", "distances", "transforms"):
            v = getattr(self, name)
            v = (v,) if isinstance(v, (str, float, int)) else tuple(v)
            object.__setattr__(self, name, v)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}.")
        if not self.thetas or any(not 0.0 <= float(t) <= 1.0 for t in self.thetas):
            raise ValueError(f"thetas must be a non-empty list of values in [0, 1], got {list(self.thetas)}.")
        object.__setattr__(self, "thetas", tuple(sorted({float(t) for t in self.thetas})))
        bad = [d for d in self.distances if d not in DISTANCES]
        if bad or not self.distances:
            raise ValueError(f"distances must be a non-empty subset of {DISTANCES}, got {list(self.distances)}.")
        bad = [t for t in self.transforms if t not in TRANSFORMS]
        if bad or not self.transforms:
            raise ValueError(f"transforms must be a non-empty subset of {TRANSFORMS}, got {list(self.transforms)}.")
        if self.nnls_solver not in ("cd", "multiplicative"):
            raise ValueError(f"nnls_solver must be 'cd' or 'multiplicative', not {self.nnls_solver!r}.")
        if not 0.0 <= self.nmf_l1_ratio <= 1.0 or self.nmf_alpha < 0:
            raise ValueError("nmf_alpha must be >= 0 and nmf_l1_ratio in [0, 1].")
        if not 0.0 < self.gene_filter_fraction <= 1.0:
            raise ValueError("gene_filter_fraction must be in (0, 1].")
        if not 0.0 < self.d_min_fraction <= self.d_max_fraction:
            raise ValueError("Need 0 < d_min_fraction <= d_max_fraction.")
        if self.kmeans_n_init < 1 or self.kmeans_max_iter < 1 or self.max_dims < 1:
            raise ValueError("kmeans_n_init, kmeans_max_iter and max_dims must be at least 1.")
        if self.n_source_clusters is not None and self.n_source_clusters < 2:
            raise ValueError("n_source_clusters must be at least 2.")
        if self.svm_max_cells is not None and self.svm_max_cells < 50:
            raise ValueError("svm_max_cells must be at least 50, or None to cluster every cell with SC3.")


@dataclass
class _Prepared:
    """A pre-processed dataset: log data of the kept cells/genes and where they came from."""

    X: sp.csr_matrix  # kept cells x kept genes
    genes: pd.Index  # kept genes
    cells: np.ndarray  # boolean mask over the input's cells
    labels: np.ndarray | None = None  # for kept cells
    info: dict = field(default_factory=dict)


def _prepare(adata, layer, cfg: NMFTransferConfig, what: str, labels_key: str | None = None) -> _Prepared:
    X = get_counts(adata, layer, what=what)
    genes = pd.Index(adata.var_names).astype(str)
    keep = cell_filter_mask(X, cfg.cell_filter_min_genes, cfg.cell_filter_threshold)
    labels = None
    if labels_key is not None:
        labels = get_labels(adata, labels_key, what=what)
        keep &= check_finite_labels(labels, what)
    if keep.sum() < 2:
        raise ValueError(
            f"Only {int(keep.sum())} {what} cells pass the cell filter (>= {cfg.cell_filter_min_genes} genes with "
            f"value >= {cfg.cell_filter_threshold}); lower cell_filter_min_genes (0 turns the filter off)."
        )
    X = X[keep]
    gmask = (
        gene_filter_mask(X, cfg.gene_filter_threshold, cfg.gene_filter_fraction)
        if cfg.gene_filter
        else np.ones(X.shape[1], dtype=bool)
    )
    if gmask.sum() < MIN_SHARED_GENES:
        raise ValueError(
            f"The gene filter keeps only {int(gmask.sum())} of the {what}'s {X.shape[1]} genes (value >= "
            f"{cfg.gene_filter_threshold} in >= {100 * (1 - cfg.gene_filter_fraction):.0f}% of cells and non-zero in "
            f"<= {100 * cfg.gene_filter_fraction:.0f}%); at least {MIN_SHARED_GENES} are needed. "
            "Pass gene_filter=False "
            "(e.g. for dense simulated counts) or lower gene_filter_threshold."
        )
    X = X[:, np.flatnonzero(gmask)]
    if cfg.log_transform:
        X = log2p(X)
    info = {
        "n_cells": int(len(keep)),
        "n_cells_kept": int(keep.sum()),
        "n_genes": int(len(genes)),
        "n_genes_kept": int(gmask.sum()),
    }
    return _Prepared(sp.csr_matrix(X), genes[gmask], keep, None if labels is None else labels[keep], info)


def _shared(source_genes: pd.Index, target: _Prepared, query_genes_all) -> tuple[pd.Index, dict]:
    overlap = gene_overlap(source_genes, query_genes_all, what="query")
    common = source_genes[source_genes.isin(target.genes)]
    if len(common) < MIN_SHARED_GENES:
        raise ValueError(
            f"After filtering, source and target share only {len(common)} genes (source keeps {len(source_genes)}, "
            f"target {len(target.genes)}); at least {MIN_SHARED_GENES} are needed. Relax the gene filter "
            "(gene_filter=False or a lower gene_filter_threshold) or check the gene identifiers."
        )
    overlap = {**overlap, "n_shared_after_filters": int(len(common))}
    return common, overlap


def _majority(values: np.ndarray, groups: np.ndarray) -> dict:
    """For every group, its most frequent value (ties: first in sorted order)."""
    out = {}
    for g in np.unique(groups):
        v, c = np.unique(values[groups == g], return_counts=True)
        out[int(g)] = str(v[np.argmax(c)])
    return out


class NMFTransfer(Clusterer):
    """NMF transfer clustering: ``NMFTransfer(**options).fit(reference).predict(query, n_clusters=k)``.

    ``fit`` learns the source dictionary once; ``predict`` clusters any number
    of targets with it. ``save``/``load`` keep the dictionary (safetensors)
    and its genes, classes and config (JSON). ``mode="concatenate"`` needs the
    reference's data, which is kept in memory after ``fit`` but not saved.

    Parameters
    ----------
    config
        A :class:`NMFTransferConfig` or dict; keyword ``overrides`` replace single options.
    seed
        Seeds every random step (NNDSVDar fill, shuffled sweeps, SC3's d
        subsample and k-means starts, the multiplicative NNLS start).
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    verbose
        Show progress bars (default: ``pybridge.settings.verbose``).
    """

    method = "nmf_transfer"
    config_cls = NMFTransferConfig

    _fit_hint = "fit(reference)"

    def __init__(self, config=None, *, seed: int = 0, device: str = "auto", verbose: bool | None = None, **overrides):
        super().__init__(config, seed=seed, device=device, verbose=verbose, **overrides)
        self.module_: SourceDictionary | None = None
        self.genes_: pd.Index | None = None
        self.classes_: list[str] | None = None
        self.labelled_: bool = True
        self._source: _Prepared | None = None

    # ------------------------------------------------------------------ fitting
    def _generator(self, offset: int = 0) -> torch.Generator:
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed + offset)
        return g

    def fit(self, reference, *, labels_key: str | None = "cell_type", layer: str | None = None) -> "NMFTransfer":
        """Learn the source dictionary from ``reference`` (counts in ``X`` or ``layer``).

        With ``labels_key=None`` the source is first clustered by NMF (the
        paper's route when no labels are available).
        """
        cfg, timer = self.config, Timer()
        with timer("preprocess_s"):
            src = _prepare(reference, layer, cfg, "reference", labels_key)
            op = DataOperator(src.X, self.device)
        info: dict = {"reference": src.info}
        if src.labels is None:
            with timer("label_free_nmf_s"):
                k = cfg.n_source_clusters or estimate_k(MixedTarget(op))
                A0, Bt0 = nndsvdar(op, k, self._generator(1))
                bar = progress(cfg.nmf_max_iter, self.verbose, "source NMF clustering")
                A, _, nmf0 = enet_nmf(
                    op,
                    A0,
                    Bt0,
                    alpha=cfg.nmf_alpha,
                    l1_ratio=cfg.nmf_l1_ratio,
                    max_iter=cfg.nmf_max_iter,
                    tol=cfg.nmf_tol,
                    generator=self._generator(2) if cfg.nmf_shuffle else None,
                    bar=bar,
                )
                bar.close()
                codes = A.argmax(1).cpu().numpy()
                src.labels = np.array([f"NMF{c + 1}" for c in codes], dtype=object)
                info["label_free"] = {"n_components": int(k), "n_iter": nmf0["n_iter"], "converged": nmf0["converged"]}
            self.labelled_ = False
        classes = sorted(pd.unique(src.labels).tolist())
        if len(classes) < 2:
            raise ValueError("The source has fewer than two classes after filtering; the NMF needs k >= 2.")
        y = pd.Categorical(src.labels, categories=classes).codes.astype(np.int64)
        with timer("nmf_s"):
            A0 = torch.nn.functional.one_hot(torch.as_tensor(y, device=self.device), len(classes)).to(torch.float32)
            Bt0 = torch.zeros((src.X.shape[1], len(classes)), dtype=torch.float32, device=self.device)
            gen = self._generator(3) if cfg.nmf_shuffle else None
            # (a) dictionary with the coefficients fixed at the one-hot labels, then (b) both factors
            _, Bt0, a_info = enet_nmf(
                op,
                A0,
                Bt0,
                alpha=cfg.nmf_alpha,
                l1_ratio=cfg.nmf_l1_ratio,
                max_iter=cfg.nmf_max_iter,
                tol=cfg.nmf_tol,
                update_coef=False,
                generator=gen,
            )
            if cfg.nmf_refine:
                bar = progress(cfg.nmf_max_iter, self.verbose, "source NMF")
                A, Bt, nmf = enet_nmf(
                    op,
                    A0,
                    Bt0,
                    alpha=cfg.nmf_alpha,
                    l1_ratio=cfg.nmf_l1_ratio,
                    max_iter=cfg.nmf_max_iter,
                    tol=cfg.nmf_tol,
                    generator=gen,
                    bar=bar,
                )
                bar.close()
            else:
                A, Bt, nmf = A0, Bt0, a_info
        nmf_labels = A.argmax(1).cpu().numpy()
        from sklearn.metrics import adjusted_rand_score

        source_ari = float(adjusted_rand_score(y, nmf_labels))
        if self.labelled_ and source_ari < 0.9:
            warnings.warn(
                f"The source NMF moved away from the given labels (ARI {source_ari:.2f} between argmax W_src and "
                f"{labels_key!r}), so some dictionary components no longer stand for one cell type. "
                "nmf_refine=False keeps W_src at the labels (only the dictionary is fitted).",
                UserWarning,
                stacklevel=2,
            )
        empty = [classes[i] for i in range(len(classes)) if float(Bt[:, i].sum()) == 0]
        if empty:
            logger.warning(
                "nmf_transfer: the source NMF left the components of %s empty (all zero); "
                "target cells cannot be assigned to them.",
                ", ".join(map(str, empty)),
            )
        self.module_ = SourceDictionary(Bt.T.contiguous())
        self.genes_, self.classes_ = pd.Index(src.genes), [str(c) for c in classes]
        self._source = src
        info.update(
            {
                "n_components": len(classes),
                "nmf_iterations": int(nmf["n_iter"]),
                "nmf_converged": bool(nmf["converged"]),
                "nmf_objective_start": float(nmf["objective"][0]),
                "nmf_objective_end": float(nmf["objective"][-1]),
                # agreement of argmax(W_src) with the labels it started from (the authors' "source ARI")
                "source_ari": source_ari,
                "empty_components": empty,
                "labelled": self.labelled_,
                "timings": timer.times,
            }
        )
        self.nmf_history_ = {"objective": nmf["objective"], "initial_dictionary_iterations": a_info["n_iter"]}
        self.fit_info_ = info
        logger.info(
            "nmf_transfer: source NMF with %d components on %d cells x %d genes, %d iterations (source ARI %.3f)",
            len(classes),
            src.X.shape[0],
            src.X.shape[1],
            nmf["n_iter"],
            info["source_ari"],
        )
        return self

    def replace(self, **overrides) -> "NMFTransfer":
        """A copy with some options (or ``seed``) changed that shares the fitted dictionary.

        E.g. ``model.replace(mode="target")`` for the baseline on the same genes,
        or ``model.replace(thetas=[0.5])`` for a fixed theta.
        """
        new = copy.copy(self)
        if "seed" in overrides:
            new.seed = int(overrides.pop("seed"))
        new.config = make_config(NMFTransferConfig, self.config, overrides)
        return new

    def _is_fitted(self) -> bool:
        return self.module_ is not None

    # ---------------------------------------------------------------- prediction
    def coefficients(self, query, *, layer: str | None = None) -> pd.DataFrame:
        """NNLS coefficients of the (pre-processed) query cells on the source dictionary (cells x classes)."""
        self._check_fitted()
        trg = _prepare(query, layer, self.config, "query")
        common, _ = _shared(self.genes_, trg, query.var_names)
        op = DataOperator(align_columns(trg.X, trg.genes, common), self.device)
        A = self.nnls(op, self.dictionary_t(common))
        return pd.DataFrame(A.cpu().numpy(), index=pd.Index(query.obs_names)[trg.cells], columns=self.classes_)

    def dictionary_t(self, genes: pd.Index) -> torch.Tensor:
        """The source dictionary restricted to ``genes``, genes x components."""
        idx = torch.as_tensor(self.genes_.get_indexer(genes), device=self.device)
        return self.module_.dictionary[:, idx].T.contiguous()

    def nnls(self, op: DataOperator, Bt: torch.Tensor) -> torch.Tensor:
        """Non-negative coefficients of the cells in ``op`` on the dictionary ``Bt`` (the configured solver)."""
        cfg = self.config
        if cfg.nnls_solver == "cd":
            A, _ = nnls_coef(op, Bt, max_iter=cfg.nnls_max_iter or 1000, tol=cfg.nnls_tol)
        else:
            A, _ = multiplicative_coef(
                op, Bt, self._generator(4), max_iter=cfg.nnls_max_iter or 100, rel_err=cfg.nnls_tol
            )
        return A

    def predict(self, query, *, n_clusters: int | None = None, layer: str | None = None) -> ClusteringResult:
        """Cluster ``query`` (the target) with the source dictionary, choosing theta by KTA.

        ``mode="target"`` / ``"concatenate"`` give the paper's baselines on the same genes.
        """
        self._check_fitted()
        return _run(
            self.config,
            query,
            layer,
            n_clusters,
            self.seed,
            self.device,
            self.verbose,
            model=self,
            source=self._source,
            labelled=self.labelled_,
        )

    def fit_predict(
        self,
        reference,
        query,
        *,
        labels_key: str | None = "cell_type",
        layer: str | None = None,
        query_layer: str | None = None,
        n_clusters: int | None = None,
    ) -> ClusteringResult:
        """Learn the dictionary from ``reference``, then cluster ``query`` with it."""
        self.fit(reference, labels_key=labels_key, layer=layer)
        return self.predict(query, n_clusters=n_clusters, layer=query_layer)

    # ---------------------------------------------------------------- persistence
    def _state(self) -> dict[str, torch.Tensor]:
        return {"dictionary": self.module_.dictionary}

    def _meta(self) -> dict:
        return {
            "config": dataclasses.asdict(self.config),
            "genes": list(self.genes_),
            "classes": list(self.classes_),
            "seed": self.seed,
            "labelled": self.labelled_,
            "fit_info": self.fit_info_,
        }

    def _load_state(self, tensors, meta) -> None:
        self.module_ = SourceDictionary(tensors["dictionary"].to(self.device))
        self.genes_ = pd.Index(meta["genes"]).astype(str)
        self.classes_ = list(meta["classes"])
        self.labelled_ = bool(meta.get("labelled", True))


# ---------------------------------------------------------------------------- the three pipelines
def _run(
    cfg: NMFTransferConfig,
    query,
    layer,
    n_clusters,
    seed,
    device,
    verbose,
    *,
    model: NMFTransfer | None = None,
    source: _Prepared | None = None,
    labelled: bool = True,
) -> ClusteringResult:
    """Cluster ``query``: transfer (needs ``model``), target-only, or concatenated with ``source``."""
    timer, t0 = Timer(), time.perf_counter()
    mode = cfg.mode
    if mode == "concatenate" and source is None:
        raise ValueError(
            "mode='concatenate' needs the reference data: pass reference= (a loaded model does not keep it)."
        )
    with timer("preprocess_s"):
        trg = _prepare(query, layer, cfg, "query")
        overlap = None
        genes = trg.genes
        src_genes = model.genes_ if model is not None else (source.genes if source is not None else None)
        if src_genes is not None:
            genes, overlap = _shared(src_genes, trg, query.var_names)
        Xq = align_columns(trg.X, trg.genes, genes)
    n = Xq.shape[0]
    params: dict = {
        "mode": mode,
        "gene_overlap": overlap,
        "n_genes_used": int(len(genes)),
        "n_cells_clustered": int(n),
        "n_cells_filtered": int((~trg.cells).sum()),
    }
    sc3_kw = dict(
        seed=seed,
        distances=cfg.distances,
        transforms=cfg.transforms,
        d_range=(cfg.d_min_fraction, cfg.d_max_fraction),
        max_dims=cfg.max_dims,
        n_init=cfg.kmeans_n_init,
        max_iter=cfg.kmeans_max_iter,
    )
    coef = cell_types = cluster_map = None
    if mode == "concatenate":
        with timer("sc3_s"):
            Xs = align_columns(source.X, source.genes, genes)
            op = DataOperator(sp.vstack([Xs, Xq]).tocsr(), device)
            mt = MixedTarget(op)
            k = n_clusters or estimate_k(MixedTarget(DataOperator(Xq, device)))
            labels_all, cons, info = sc3(mt, 0.0, k, **sc3_kw)
        ns = Xs.shape[0]
        labels, cons = labels_all[ns:], cons[ns:, ns:]
        prob, conf = consensus_scores(cons, labels, k)
        params.update({"n_source_cells": int(ns), "sc3": info})
        if source.labels is not None and labelled:
            cluster_map = _majority(np.asarray(source.labels, dtype=str), labels_all[:ns])
    else:
        with timer("setup_s"):
            op = DataOperator(Xq, device)
            Bt = assign = None
            if mode == "transfer":
                Bt = model.dictionary_t(genes)
                coef = model.nnls(op, Bt)
                assign = coef.argmax(1)
            # SC3's hybrid mode: above svm_max_cells cells, SC3 (and KTA) see a random subset
            sub = _sc3_subset(n, cfg.svm_max_cells, seed)
            if sub is None:
                mt = MixedTarget(op, Bt, assign)
            else:
                sub_t = torch.as_tensor(sub, device=op.device)
                mt = MixedTarget(DataOperator(Xq[sub], device), Bt, None if assign is None else assign[sub_t])
            k = n_clusters or estimate_k(mt)  # uses theta = 0, the target itself
        thetas = cfg.thetas if mode == "transfer" else (0.0,)
        kta, best = [], None
        bar = progress(len(thetas), verbose, "NMF transfer (theta grid)")
        with timer("sc3_s"):
            for theta in thetas:
                lab, cons, info = sc3(mt, theta, k, **sc3_kw)
                score = kernel_target_alignment(mt.gram(theta), lab)
                kta.append(score)
                if best is None or score > best[1] + KTA_TIE:  # ties (within rounding) keep the smaller theta
                    best = (theta, score, lab, cons, info)
                bar.update(1)
                bar.set_postfix(theta=theta, kta=f"{score:.3f}")
        bar.close()
        theta, _, labels, cons, info = best
        prob, conf = consensus_scores(cons, labels, k)
        if sub is not None:
            with timer("svm_s"):
                labels, prob, conf = _svm_extend(op, Bt, assign, sub, theta, labels, prob, conf, seed)
            info = {**info, "hybrid": {"n_cells_sc3": int(len(sub)), "n_cells_svm": int(n - len(sub))}}
        params.update({"theta": float(theta), "kta": {"theta": [float(t) for t in thetas], "kta": kta}, "sc3": info})
        if mode == "transfer":
            a = assign.cpu().numpy()
            counts = np.bincount(a, minlength=len(model.classes_))
            params["source_assignment_counts"] = {c: int(m) for c, m in zip(model.classes_, counts)}
            if labelled:
                names = np.asarray(model.classes_, dtype=object)[a]
                cluster_map = _majority(names.astype(str), labels)
            coef = coef.cpu().numpy()
    params["n_clusters"] = int(k)
    params["n_clusters_estimated"] = n_clusters is None
    # back to all query cells (cells removed by the cell filter are "Unassigned")
    N = query.n_obs
    keep = trg.cells
    clusters = np.full(N, UNASSIGNED, dtype=object)
    clusters[keep] = labels.astype(str)
    confidence = np.zeros(N)
    confidence[keep] = conf
    probabilities = np.zeros((N, k))
    probabilities[keep] = prob
    embedding = None
    if coef is not None:
        embedding = np.zeros((N, coef.shape[1]), dtype=np.float32)
        embedding[keep] = coef
        params["embedding_columns"] = list(model.classes_)
    if cluster_map is not None:
        cluster_map = {str(c): t for c, t in cluster_map.items()}
        cell_types = np.array([cluster_map.get(c, UNASSIGNED) for c in clusters], dtype=object)
    cfg_dict = dataclasses.asdict(cfg)
    params.update(
        {
            "config": {k_: (list(v) if isinstance(v, tuple) else v) for k_, v in cfg_dict.items()},
            "seed": int(seed),
            "device": str(device),
            "source": None if model is None else {k_: v for k_, v in model.fit_info_.items() if k_ != "timings"},
            "source_classes": None if model is None else list(model.classes_),
            "timings": {
                **({} if model is None else model.fit_info_.get("timings", {})),
                **timer.times,
                "predict_s": time.perf_counter() - t0,
            },
            "version": _version(),
        }
    )
    logger.info(
        "nmf_transfer (%s): %d cells into %d clusters%s in %.1fs",
        mode,
        n,
        k,
        f" (theta={params['theta']})" if mode == "transfer" else "",
        time.perf_counter() - t0,
    )
    return ClusteringResult(
        obs_names=pd.Index(query.obs_names),
        clusters=clusters,
        confidence=confidence,
        probabilities=probabilities,
        embedding=embedding,
        cell_types=cell_types,
        cluster_map=cluster_map,
        method="nmf_transfer",
        params=params,
    )


def _sc3_subset(n: int, max_cells: int | None, seed: int) -> np.ndarray | None:
    """The cells SC3 clusters in its hybrid mode (sorted), or None when it clusters all ``n``."""
    if max_cells is None or n <= max_cells:
        return None
    return np.sort(np.random.default_rng(int(seed)).choice(n, int(max_cells), replace=False))


def _svm_extend(
    op: DataOperator,
    Bt,
    assign,
    sub: np.ndarray,
    theta: float,
    labels: np.ndarray,
    prob: np.ndarray,
    conf: np.ndarray,
    seed: int,
    block: int = 4096,
):
    """SC3's hybrid step: a linear SVM trained on the clustered cells (features standardised, as e1071's
    default) assigns every other cell; those get their cluster's mean consensus confidence and soft assignment.
    Returns labels, soft assignments and confidences for all cells, cluster ids again ordered by size."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    n, k = op.shape[0], prob.shape[1]
    train = mixed_rows(op, Bt, assign, sub, theta).cpu().numpy().astype(np.float64)
    scaler = StandardScaler().fit(train)
    svm = SVC(kernel="linear", C=1.0, random_state=int(seed)).fit(scaler.transform(train), labels)
    rest = np.setdiff1d(np.arange(n), sub)
    full = np.empty(n, dtype=np.int64)
    full[sub] = labels
    for i in range(0, len(rest), block):
        idx = rest[i : i + block]
        full[idx] = svm.predict(scaler.transform(mixed_rows(op, Bt, assign, idx, theta).cpu().numpy()))
    mean_prob = np.stack([prob[labels == c].mean(0) for c in range(k)])
    mean_conf = np.array([conf[labels == c].mean() for c in range(k)])
    prob_all, conf_all = mean_prob[full], mean_conf[full]
    prob_all[sub], conf_all[sub] = prob, conf
    new = relabel_by_size(full)  # sizes changed: ids ordered by size again
    perm = np.empty(k, dtype=np.int64)
    perm[full] = new
    out_prob = np.empty_like(prob_all)
    out_prob[:, perm] = prob_all
    return new, out_prob, conf_all


def run_nmf_transfer(
    query,
    *,
    reference=None,
    n_clusters: int | None = None,
    labels_key: str | None = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    seed: int = 0,
    device: str = "auto",
    verbose: bool | None = None,
    **config_overrides,
) -> ClusteringResult:
    """TransferCluster (or a baseline, ``mode=``) of ``query`` with an optional labelled ``reference``.

    Without a reference this is SC3 on the query alone (TargetCluster).
    """
    cfg = make_config(NMFTransferConfig, None, config_overrides)
    dev = resolve_device(device)
    verbose = resolve_verbose(verbose)
    if reference is None:
        if cfg.mode == "concatenate":
            raise ValueError("mode='concatenate' clusters the reference and the query together: pass reference=.")
        if cfg.mode == "transfer":
            logger.info("nmf_transfer: no reference given, clustering the query alone (TargetCluster)")
            cfg = dataclasses.replace(cfg, mode="target")
        return _run(cfg, query, layer, n_clusters, seed, dev, verbose)
    if cfg.mode == "transfer":
        model = NMFTransfer(cfg, seed=seed, device=str(dev), verbose=verbose).fit(
            reference, labels_key=labels_key, layer=reference_layer
        )
        return model.predict(query, n_clusters=n_clusters, layer=layer)
    source = _prepare(reference, reference_layer, cfg, "reference", labels_key)
    return _run(cfg, query, layer, n_clusters, seed, dev, verbose, source=source, labelled=labels_key is not None)
