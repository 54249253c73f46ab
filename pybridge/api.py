"""Functional, scanpy-style entry points: data first, everything else keyword-only.

Every method has two layers:

* a *compute* function that returns an :class:`~pybridge.AnnotationResult` or
  :class:`~pybridge.ClusteringResult` and touches no container, registered in
  :data:`COMPUTE` (the CLI and the R bridge call these), and
* the public function (``pybridge.scnym`` ...) that computes and writes the
  result into the AnnData under ``key_added``.
"""
from __future__ import annotations

import time

from ._settings import logger
from .models import ScNym
from .models.jind import JIND


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
    t0 = time.perf_counter()
    model = ScNym(seed=seed, device=device, verbose=verbose, **config_overrides)
    model.fit(reference, labels_key=labels_key, layer=reference_layer, query=query, query_layer=layer,
              domain_key=domain_key)
    result = model.predict(query, layer=layer)
    result.params["timings"]["total_s"] = time.perf_counter() - t0
    logger.info("scnym: annotated %d cells in %.1fs", query.n_obs, time.perf_counter() - t0)
    return result


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
    :class:`pybridge.ScNymConfig` options, e.g. ``discovery=True, reject=True``.
    Returns the annotated copy when ``copy=True``, else ``None``.
    """
    result = compute_scnym(query, reference, labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                           domain_key=domain_key, seed=seed, device=device, verbose=verbose, **config_overrides)
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
    """Train JIND on ``reference``, align ``query`` to it (and JIND+ with ``jind_plus=True``); return its AnnotationResult."""
    t0 = time.perf_counter()
    model = JIND(seed=seed, device=device, verbose=verbose, **config_overrides)
    model.fit(reference, labels_key=labels_key, layer=reference_layer, query=query, query_layer=layer)
    result = model.predict(query, layer=layer)
    result.params["timings"]["total_s"] = time.perf_counter() - t0
    logger.info("jind: annotated %d cells in %.1fs (stage %s)", query.n_obs, time.perf_counter() - t0,
                result.params["stage"])
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
    result = compute_jind(query, reference, labels_key=labels_key, layer=layer, reference_layer=reference_layer,
                          seed=seed, device=device, verbose=verbose, **config_overrides)
    return result.to_adata(query, key_added, copy=copy)


#: method name -> (kind, compute function, estimator class or None).
#: kind "annotation": compute(query, reference, **kw); kind "clustering": compute(adata, reference=None, **kw)
COMPUTE: dict[str, tuple[str, object, type | None]] = {
    "scnym": ("annotation", compute_scnym, ScNym),
    "jind": ("annotation", compute_jind, JIND),
}


def methods(kind: str | None = None) -> list[str]:
    return sorted(k for k, v in COMPUTE.items() if kind is None or v[0] == kind)


def get_method(name: str):
    if name not in COMPUTE:
        raise ValueError(f"Unknown method {name!r}; available: {', '.join(methods())}.")
    return COMPUTE[name]
