"""Functional, scanpy-style entry points: data first, everything else keyword-only.

Every method has two layers:

* a *compute* function that returns an :class:`~pybridge.AnnotationResult` or
  :class:`~pybridge.ClusteringResult` and touches no container, registered in
  :mod:`pybridge.models._registry` with one calling convention,
  ``compute(query, reference=None, **options)`` (the CLI, the R bridge and the
  benchmarks call these through the registry), and
* the public function (``pybridge.scnym`` ...) that computes and writes the
  result into the AnnData under ``key_added``.
"""

from __future__ import annotations

import inspect
import time

from ._settings import logger
from .data import check_anndata, check_counts, check_names, gene_overlap, get_labels
from .models import ScNym
from .models._registry import MethodInfo, get_method, methods, register  # noqa: F401 (get_method, methods: re-exported)
from .models.cicl import CICL
from .models.itclust import ItClust
from .models.jind import JIND
from .models.linear import Linear
from .models.nmf_transfer import NMFTransfer, run_nmf_transfer
from .result import check_key


def _check_inputs(query, reference=None, *, what: str = "query") -> None:
    """Refuse, with a hint, anything but AnnData (a list, a path, a DataFrame) before it is used."""
    check_anndata(query, what)
    if reference is not None:
        check_anndata(reference, "reference")


def _check_gene_names(reference, query, *, upper: bool = False) -> None:
    """Refuse, before training, a query that shares too few gene names with the reference (with the likely cause)."""
    check_names(reference, "reference")
    check_names(query, "query")
    ref_genes, query_genes = reference.var_names.astype(str), query.var_names.astype(str)
    if upper:  # the method matches genes case-insensitively
        ref_genes, query_genes = ref_genes.str.upper(), query_genes.str.upper()
    gene_overlap(ref_genes, query_genes, what="query", warn=False)


def _fit_predict(model, query, reference, labels_key, layer, reference_layer, **fit_options):
    """Fit an annotator on ``reference`` with ``query`` as its target data, then annotate ``query``; timed."""
    t0 = time.perf_counter()
    model.fit(reference, labels_key=labels_key, layer=reference_layer, query=query, query_layer=layer, **fit_options)
    result = model.predict(query, layer=layer)
    result.params["timings"]["total_s"] = time.perf_counter() - t0
    logger.info("%s: annotated %d cells in %.1fs", model.method, query.n_obs, time.perf_counter() - t0)
    return result


def compute_scnym(
    query,
    reference,
    *,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    domain_key: str | None = None,
    seed: int = 0,
    device: str = "auto",
    verbose: bool | None = None,
    **config_overrides,
):
    """Train scNym on ``reference`` with ``query`` as unlabelled target data; return the query's AnnotationResult."""
    _check_inputs(query, reference)
    model = ScNym(seed=seed, device=device, verbose=verbose, **config_overrides)
    return _fit_predict(model, query, reference, labels_key, layer, reference_layer, domain_key=domain_key)


def scnym(
    query,
    reference,
    *,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    domain_key: str | None = None,
    key_added: str = "scnym",
    seed: int = 0,
    device: str = "auto",
    copy: bool = False,
    verbose: bool | None = None,
    **config_overrides,
):
    """Annotate ``query`` with scNym trained on ``reference`` (the query is used as unlabelled target data).

    Writes ``obs[key_added]``, ``obs[key_added + '_confidence']``,
    ``obsm[key_added + '_probabilities']`` (classes in ``uns[key_added]['classes']``),
    ``obsm['X_' + key_added]`` and ``uns[key_added]``. ``config_overrides`` are
    :class:`pybridge.ScNymConfig` options, e.g. ``reject=True`` or ``discovery=False``.
    Returns the annotated copy when ``copy=True``, else ``None``.
    """
    _check_inputs(query, reference)
    check_key(query, key_added, "scnym", warn=False)  # fail before training, not after
    result = compute_scnym(
        query,
        reference,
        labels_key=labels_key,
        layer=layer,
        reference_layer=reference_layer,
        domain_key=domain_key,
        seed=seed,
        device=device,
        verbose=verbose,
        **config_overrides,
    )
    return result.to_adata(query, key_added, copy=copy)


def compute_jind(
    query,
    reference,
    *,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    seed: int = 0,
    device: str = "auto",
    verbose: bool | None = None,
    **config_overrides,
):
    """Train JIND on ``reference`` and align ``query`` to it (JIND+ with ``jind_plus=True``).

    Returns the query's AnnotationResult.
    """
    _check_inputs(query, reference)
    t0 = time.perf_counter()
    model = JIND(seed=seed, device=device, verbose=verbose, **config_overrides)
    if query.n_obs == 1 and (model.config.align or model.config.jind_plus):  # checked before training
        raise ValueError(
            f"The query has {query.n_obs} cell(s); alignment and JIND+ need at least 2. "
            "Pass align=False, jind_plus=False to annotate it with the reference model alone."
        )
    model.fit(reference, labels_key=labels_key, layer=reference_layer, query=query, query_layer=layer)
    result = model.predict(query, layer=layer)
    result.params["timings"]["total_s"] = time.perf_counter() - t0
    logger.info(
        "jind: annotated %d cells in %.1fs (stage %s)", query.n_obs, time.perf_counter() - t0, result.params["stage"]
    )
    return result


def jind(
    query,
    reference,
    *,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    key_added: str = "jind",
    seed: int = 0,
    device: str = "auto",
    copy: bool = False,
    verbose: bool | None = None,
    **config_overrides,
):
    """Annotate ``query`` with JIND trained on ``reference`` (the query is aligned to it; JIND+ is opt-in).

    Writes ``obs[key_added]`` (rejected cells ``"Unassigned"``),
    ``obs[key_added + '_confidence']``, ``obs[key_added + '_raw']`` (label before
    rejection), ``obsm[key_added + '_probabilities']`` (classes in
    ``uns[key_added]['classes']``), ``obsm['X_' + key_added]`` (the latent code
    the classifier sees, aligned where alignment ran) and ``uns[key_added]``.
    ``config_overrides`` are :class:`pybridge.JINDConfig` options, e.g.
    ``jind_plus=True``, ``align=False``, ``outlier_fraction=0.1``.
    Returns the annotated copy when ``copy=True``, else ``None``.
    """
    _check_inputs(query, reference)
    check_key(query, key_added, "jind", warn=False)  # fail before training, not after
    result = compute_jind(
        query,
        reference,
        labels_key=labels_key,
        layer=layer,
        reference_layer=reference_layer,
        seed=seed,
        device=device,
        verbose=verbose,
        **config_overrides,
    )
    return result.to_adata(query, key_added, copy=copy)


def compute_itclust(
    query,
    reference,
    *,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    seed: int = 0,
    device: str = "auto",
    verbose: bool | None = None,
    **config_overrides,
):
    """Run ItClust with ``reference`` as labelled source and ``query`` as target; return the query's ItClustResult.

    The result is a :class:`~pybridge.ClusteringResult` (clusters, cluster
    confidence, mapped source type, soft assignments, embedding) with the
    per-cell score in ``cell_score`` and the unflagged type in ``raw_cell_types``.
    """
    if reference is None:
        raise ValueError("ItClust transfers from a labelled reference: pass one (reference=).")
    _check_inputs(query, reference)
    t0 = time.perf_counter()
    model = ItClust(seed=seed, device=device, verbose=verbose, **config_overrides)
    _check_gene_names(reference, query, upper=model.config.case_insensitive_genes)
    result = model.fit_predict(reference, query, labels_key=labels_key, layer=reference_layer, query_layer=layer)
    result.params["timings"]["total_s"] = time.perf_counter() - t0
    logger.info(
        "itclust: %d cells in %d clusters (%d flagged as possible new types) in %.1fs",
        query.n_obs,
        len(set(result.clusters)),
        int(result.flagged.sum()),
        time.perf_counter() - t0,
    )
    return result


def itclust(
    query,
    reference,
    *,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    key_added: str = "itclust",
    seed: int = 0,
    device: str = "auto",
    copy: bool = False,
    verbose: bool | None = None,
    **config_overrides,
):
    """Cluster ``query`` by transfer from the labelled ``reference`` with ItClust, and name the clusters.

    Writes ``obs[key_added]`` (cluster id), ``obs[key_added + '_confidence']``
    (the confidence of the cell's cluster), ``obs[key_added + '_cell_type']``
    (the cluster's source type, ``"Unassigned"`` where the cluster is flagged as a
    possible new type), ``obs[key_added + '_cell_type_raw']`` (before flagging),
    ``obs[key_added + '_cell_score']`` (the cell's soft assignment to its cluster),
    ``obsm[key_added + '_probabilities']`` (cells x clusters), ``obsm['X_' + key_added]``
    and ``uns[key_added]`` (params, ``cluster_map`` and the per-cluster table
    ``clusters``). ``config_overrides`` are :class:`pybridge.ItClustConfig` options,
    e.g. ``min_cluster_confidence=0.6``. Returns the annotated copy when ``copy=True``, else ``None``.
    """
    _check_inputs(query, reference)
    check_key(query, key_added, "itclust", warn=False)
    result = compute_itclust(
        query,
        reference,
        labels_key=labels_key,
        layer=layer,
        reference_layer=reference_layer,
        seed=seed,
        device=device,
        verbose=verbose,
        **config_overrides,
    )
    return result.to_adata(query, key_added, copy=copy)


def compute_cicl(
    adata,
    reference=None,
    *,
    n_clusters: int | None = None,
    layer: str | None = None,
    seed: int = 0,
    device: str = "auto",
    verbose: bool | None = None,
    **config_overrides,
):
    """Cluster ``adata`` (raw counts in ``X`` or ``layer``) with CICL; return a ClusteringResult.

    ``n_clusters=None`` estimates the number of clusters (``k_estimator`` option).
    CICL is unsupervised: ``reference`` exists for the shared clustering signature and must be ``None``.
    """
    if reference is not None:
        raise ValueError("CICL is unsupervised and takes no reference; call it with reference=None.")
    _check_inputs(adata, what="data")
    t0 = time.perf_counter()
    model = CICL(seed=seed, device=device, verbose=verbose, n_clusters=n_clusters, **config_overrides)
    result = model.fit_predict(adata, layer=layer)
    result.params["timings"]["total_s"] = time.perf_counter() - t0
    logger.info("cicl: %d cells in %d clusters in %.1fs", adata.n_obs, model.n_clusters_, time.perf_counter() - t0)
    return result


def cicl(
    adata,
    *,
    n_clusters: int | None = None,
    reference=None,
    layer: str | None = None,
    key_added: str = "cicl",
    seed: int = 0,
    device: str = "auto",
    copy: bool = False,
    verbose: bool | None = None,
    **config_overrides,
):
    """Cluster ``adata`` with CICL (cluster-aware iterative contrastive learning).

    Writes ``obs[key_added]`` (cluster id, ``"0"`` = largest cluster),
    ``obs[key_added + '_confidence']`` (the Student-t soft assignment of the cell
    to its cluster), ``obsm[key_added + '_probabilities']`` (cells x clusters),
    ``obsm['X_' + key_added]`` (encoder embedding) and ``uns[key_added]`` (config,
    number of clusters and whether it was estimated, training history, timings).
    ``n_clusters=None`` estimates K. ``config_overrides`` are :class:`pybridge.CICLConfig`
    options, e.g. ``n_epochs=100``. Returns the annotated copy when ``copy=True``, else ``None``.
    """
    _check_inputs(adata, what="data")
    check_key(adata, key_added, "cicl", warn=False)
    result = compute_cicl(
        adata,
        n_clusters=n_clusters,
        reference=reference,
        layer=layer,
        seed=seed,
        device=device,
        verbose=verbose,
        **config_overrides,
    )
    return result.to_adata(adata, key_added, copy=copy)


def compute_nmf_transfer(
    adata,
    reference=None,
    *,
    n_clusters: int | None = None,
    labels_key: str | None = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    seed: int = 0,
    device: str = "auto",
    verbose: bool | None = None,
    **config_overrides,
):
    """NMF transfer clustering of ``adata`` (the target) with a labelled ``reference`` (the source); a ClusteringResult.

    Without a reference this is SC3 on ``adata`` alone (the paper's TargetCluster).
    ``labels_key=None`` clusters the reference by NMF first (no source labels).
    ``n_clusters=None`` uses SC3's estimate of k. ``mode="target"`` / ``"concatenate"``
    run the paper's baselines.
    """
    _check_inputs(adata, reference)
    t0 = time.perf_counter()
    # the source NMF runs before the query is read: check the query (and the gene names) first
    check_counts(adata, layer, what="query")
    if adata.n_obs < 3:
        raise ValueError(f"NMF transfer clusters the query, which has {adata.n_obs} cell(s); it needs at least 3.")
    if reference is not None:
        check_counts(reference, reference_layer, what="reference")
        if labels_key is not None:
            get_labels(reference, labels_key, what="reference")
        _check_gene_names(reference, adata)
    result = run_nmf_transfer(
        adata,
        reference=reference,
        n_clusters=n_clusters,
        labels_key=labels_key,
        layer=layer,
        reference_layer=reference_layer,
        seed=seed,
        device=device,
        verbose=verbose,
        **config_overrides,
    )
    result.params["timings"]["total_s"] = time.perf_counter() - t0
    return result


def nmf_transfer(
    adata,
    reference=None,
    *,
    n_clusters: int | None = None,
    labels_key: str | None = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    key_added: str = "nmf_transfer",
    seed: int = 0,
    device: str = "auto",
    copy: bool = False,
    verbose: bool | None = None,
    **config_overrides,
):
    """Cluster ``adata`` by NMF transfer from a labelled ``reference`` (Mieth et al., "TransferCluster").

    ``nmf_transfer(query, reference, n_clusters=...)``, as the annotation
    functions; ``reference`` may also be given by name, and is not needed with
    ``mode="target"``.

    Writes ``obs[key_added]`` (cluster id, ``"0"`` = largest; ``"Unassigned"`` for
    cells an optional cell filter removed), ``obs[key_added + '_confidence']`` (mean
    co-association of the cell with its cluster in SC3's ensemble),
    ``obs[key_added + '_cell_type']`` (with reference labels: the source type matched
    to the cluster), ``obsm[key_added + '_probabilities']`` (cells x clusters),
    ``obsm['X_' + key_added]`` (NNLS coefficients on the source dictionary, columns
    ``uns[key_added]['embedding_columns']``) and ``uns[key_added]`` (selected
    ``theta``, the ``kta`` curve, ``cluster_map``, gene overlap, config, timings).
    ``config_overrides`` are :class:`pybridge.NMFTransferConfig` options, e.g.
    ``mode="target"``, ``thetas=[0.5]``, ``gene_filter=False``.
    Returns the annotated copy when ``copy=True``, else ``None``.
    """
    _check_inputs(adata, reference)
    check_key(adata, key_added, "nmf_transfer", warn=False)
    result = compute_nmf_transfer(
        adata,
        reference=reference,
        n_clusters=n_clusters,
        labels_key=labels_key,
        layer=layer,
        reference_layer=reference_layer,
        seed=seed,
        device=device,
        verbose=verbose,
        **config_overrides,
    )
    return result.to_adata(adata, key_added, copy=copy)


def compute_linear(
    query,
    reference,
    *,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    seed: int = 0,
    device: str = "auto",
    verbose: bool | None = None,
    **config_overrides,
):
    """Train the linear annotator on ``reference`` (the genes it shares with ``query``); return the query's
    AnnotationResult."""
    _check_inputs(query, reference)
    model = Linear(seed=seed, device=device, verbose=verbose, **config_overrides)
    return _fit_predict(model, query, reference, labels_key, layer, reference_layer)


def linear(
    query,
    reference,
    *,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    key_added: str = "linear",
    seed: int = 0,
    device: str = "auto",
    copy: bool = False,
    verbose: bool | None = None,
    **config_overrides,
):
    """Annotate ``query`` with L2-regularised multinomial logistic regression on log-CPM trained on ``reference``.

    The linear baseline (the model class behind CellTypist, scikit-learn's objective). Writes ``obs[key_added]``,
    ``obs[key_added + '_confidence']`` (the top probability), ``obs[key_added + '_raw']`` (with rejection: the label
    before it), ``obsm[key_added + '_probabilities']`` (classes in ``uns[key_added]['classes']``),
    ``obsm['X_' + key_added]`` (the class logits) and ``uns[key_added]``. ``config_overrides`` are
    :class:`pybridge.LinearConfig` options, e.g. ``C=0.1``, ``reject=True``, ``n_top_genes=2000``.
    Returns the annotated copy when ``copy=True``, else ``None``.
    """
    _check_inputs(query, reference)
    check_key(query, key_added, "linear", warn=False)  # fail before training, not after
    result = compute_linear(
        query,
        reference,
        labels_key=labels_key,
        layer=layer,
        reference_layer=reference_layer,
        seed=seed,
        device=device,
        verbose=verbose,
        **config_overrides,
    )
    return result.to_adata(query, key_added, copy=copy)


register(MethodInfo("scnym", "annotation", "required", ScNym, compute_scnym))
register(MethodInfo("jind", "annotation", "required", JIND, compute_jind))
register(
    MethodInfo(
        "itclust",
        "clustering",
        "required",
        ItClust,
        compute_itclust,
        maps_types=True,
        extra_fields=("cell_score", "raw_cell_types"),
    )
)
register(MethodInfo("cicl", "clustering", "none", CICL, compute_cicl))
register(MethodInfo("nmf_transfer", "clustering", "optional", NMFTransfer, compute_nmf_transfer, maps_types=True))
register(MethodInfo("linear", "annotation", "required", Linear, compute_linear))


#: arguments of an estimator's ``fit`` that the callers (CLI, R bridge) set themselves
_FIT_OWN_ARGS = {"self", "reference", "labels_key", "layer", "query", "query_layer"}


def split_fit_options(est_cls, options: dict) -> tuple[dict, dict]:
    """Split method options into (config options, ``fit`` keyword arguments).

    Most options configure the estimator; a few are arguments of its ``fit``
    (scNym's ``domain_key``). The CLI's ``train`` and R's ``Train*`` take both
    kinds through one ``--set`` / ``...`` list.
    """
    fit_params = inspect.signature(est_cls.fit).parameters
    fit = {k: v for k, v in options.items() if k in fit_params and k not in _FIT_OWN_ARGS}
    return {k: v for k, v in options.items() if k not in fit}, fit
