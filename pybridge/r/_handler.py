"""The request handler the R package calls: a request dict in, a dict of plain arrays out.

R reaches :func:`run_from_r` in one of two ways (see :mod:`pybridge.r`):

* **R hosts Python** (an R session, RStudio): R uses reticulate and calls
  :func:`run_from_r` directly with a request dict whose count matrices arrive as
  ``scipy.sparse.csc_matrix`` (genes x cells, straight from the ``dgCMatrix``;
  ``.T`` makes it cells x genes CSR without a copy), with the cell and gene
  names passed explicitly and the needed metadata columns as a DataFrame.
* **Python hosts R** (rpy2): the callback in :mod:`pybridge.r._rpy2_bridge`
  converts R's request (``SingleCellExperiment`` objects become AnnData) and
  calls the same :func:`run_from_r`.

Either way the answer is a dict of plain arrays (see :func:`result_to_dict`),
never a Python object that R would have to keep alive; R's ``store.R`` writes
it into the Seurat or SingleCellExperiment object. Methods are looked up in the
registry (:mod:`pybridge.models._registry`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
import traceback
import types
import typing
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..result import AnnotationResult, ClusteringResult


# ============================================================================ requests from R
def _str_list(x) -> list[str]:
    """reticulate turns a length-1 character vector into a str; rpy2 gives lists. Always a list of str."""
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return [str(v) for v in np.asarray(x, dtype=object).ravel().tolist()]


def _adata_from_matrix_payload(p: dict):
    """AnnData (cells x genes, CSR) from R's genes x cells dgCMatrix payload, names set explicitly."""
    import anndata as ad

    X = p["X"]
    obs_names = _str_list(p.get("obs_names"))
    var_names = _str_list(p.get("var_names"))
    if sp.issparse(X):
        X = sp.csc_matrix(X)
        # CSC genes x cells is CSR cells x genes: reuse the arrays. reticulate hands
        # them over as read-only views of R's memory, so take writable copies:
        # float32 values (which the models use anyway) and the index arrays.
        X = sp.csr_matrix(
            (X.data.astype(np.float32), X.indices.copy(), X.indptr.copy()), shape=(X.shape[1], X.shape[0])
        )
    else:
        X = np.asarray(X).T
    if X.shape != (len(obs_names), len(var_names)):
        raise ValueError(
            f"internal: matrix shape {X.shape} does not match {len(obs_names)} cell and {len(var_names)} gene names."
        )
    obs = pd.DataFrame(index=pd.Index(obs_names, dtype=object))
    meta = p.get("obs")
    if isinstance(meta, pd.DataFrame) and meta.shape[1] > 0:
        if len(meta) != len(obs_names):
            raise ValueError("internal: metadata rows do not match the cells.")
        for col in meta.columns:
            obs[str(col)] = (
                meta[col].to_numpy()
                if not isinstance(meta[col].dtype, pd.CategoricalDtype)
                else pd.Categorical(meta[col].astype(object), categories=meta[col].cat.categories)
            )
    var = pd.DataFrame(index=pd.Index(var_names, dtype=object))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ad.AnnData(X=X, obs=obs, var=var)


def _dataset(p, what: str):
    """A request's query/reference entry -> AnnData, ``("model", path)`` or None."""
    import anndata as ad

    if p is None:
        return None
    if isinstance(p, ad.AnnData):
        return p
    if not isinstance(p, dict) or "kind" not in p:
        raise ValueError(f"internal: cannot read the {what} sent by R ({type(p).__name__}).")
    kind = p["kind"]
    if kind == "matrix":
        return _adata_from_matrix_payload(p)
    if kind == "h5ad":
        path = Path(str(p["path"]))
        if not path.exists():
            raise ValueError(f"The {what} file {str(path)!r} does not exist.")
        try:
            return ad.read_h5ad(path)
        except Exception as err:  # h5py raises many types for non-h5ad files
            raise ValueError(
                f"Could not read the {what} {str(path)!r} as .h5ad ({type(err).__name__}: {err})."
            ) from None
    if kind == "model":
        return ("model", str(p["path"]))
    raise ValueError(f"internal: unknown {what} kind {kind!r}.")


def _field_types(est_cls) -> dict[str, tuple[type, type | None]]:
    """Field name -> (python type, element type for tuple/list fields) of the estimator's config dataclass."""
    cfg = getattr(est_cls, "config_cls", None)
    if cfg is None or not dataclasses.is_dataclass(cfg):
        return {}
    try:
        hints = typing.get_type_hints(cfg)
    except Exception:  # pragma: no cover - unresolvable annotations
        hints = {f.name: f.type for f in dataclasses.fields(cfg)}
    out = {}
    for name, tp in hints.items():
        if (typing.get_origin(tp) or tp) in (typing.Union, types.UnionType):  # Optional[int], int | None, ...
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else object
        base = typing.get_origin(tp) or tp
        elem = None
        if base in (tuple, list):
            args = [a for a in typing.get_args(tp) if a is not Ellipsis]
            elem = args[0] if len(args) == 1 and isinstance(args[0], type) else None
        out[name] = (base if isinstance(base, type) else object, elem)
    return out


def _whole_to_int(value):
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return value


def coerce_options(options: dict | None, est_cls=None) -> dict:
    """R option names and values -> Python keyword arguments.

    R names use ``.`` where Python uses ``_`` (``n.epochs`` -> ``n_epochs``). R
    has no integer literals in everyday use (``15`` is a double), so a whole
    number becomes an ``int`` where the method's config declares an int field
    (or int elements of a tuple field), and also when the config is unknown; a
    float field keeps floats. Vectors become tuples where the field is a tuple.
    """
    types_ = _field_types(est_cls) if est_cls is not None else {}
    if not isinstance(options, dict):  # an empty R list arrives as []
        if options:
            raise ValueError("Method options must be named (e.g. n_epochs = 50).")
        options = {}
    out = {}
    for key, value in options.items():
        name = str(key).replace(".", "_")
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, np.generic):
            value = value.item()
        tp, elem = types_.get(name, (None, None))
        if tp in (int, None, object):
            value = _whole_to_int(value)
        if tp in (tuple, list):
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            if elem is int:
                items = [_whole_to_int(v) for v in items]
            value = tuple(items) if tp is tuple else items
        out[name] = value
    return out


def _python_error_text(err: BaseException) -> str:
    msg = str(err).strip()
    if isinstance(err, KeyError) and msg.startswith(("'", '"')):
        msg = msg[1:-1]
    if not msg:
        return type(err).__name__
    if isinstance(err, (ValueError, TypeError)):
        return msg
    return f"{type(err).__name__}: {msg}"


def run_from_r(request: dict) -> dict:
    """Run one request from the R package and return plain arrays (never raises).

    ``request`` keys: ``task`` ("annotate", "cluster", "train" or "methods"),
    ``method`` (a name in the registry, :func:`pybridge.models._registry.get_method`),
    ``query`` and ``reference`` (see :func:`_dataset`), ``labels_key``, ``seed``,
    ``device``, ``verbose``, ``n_clusters``, ``path`` (train) and ``options``
    (method options).

    Errors come back as ``{"error": message, "error_type": ..., "traceback":
    ...}`` and Python warnings as ``{"warnings": [...]}``, so that R can raise
    and warn in its own terms whatever the backend.
    """
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = _dispatch(request)
        except Exception as err:  # everything goes back to R as an R error
            out = {
                "error": _python_error_text(err),
                "error_type": type(err).__name__,
                "traceback": traceback.format_exc(),
            }
    seen, msgs = set(), []
    for w in caught:
        # pybridge's own warnings (plain UserWarning); library chatter (anndata's
        # ImplicitModificationWarning, FutureWarning ...) is dropped
        if w.category is UserWarning or "pybridge" in str(w.filename):
            text = str(w.message)
            if text not in seen:
                seen.add(text)
                msgs.append(text)
    out["warnings"] = msgs
    out["python_s"] = time.perf_counter() - t0
    return out


def _methods_table() -> dict:
    """The registry for R's ``pybridge_methods()``: equal-length arrays, one entry per method (sorted by name)."""
    from ..models._registry import get_method, methods

    infos = [get_method(name) for name in methods()]
    return {
        "name": np.asarray([i.name for i in infos], dtype=str),
        "kind": np.asarray([i.kind for i in infos], dtype=str),
        "reference": np.asarray([i.reference for i in infos], dtype=str),
        "maps_types": np.asarray([i.maps_types for i in infos], dtype=bool),
        "extra_fields": np.asarray([",".join(i.extra_fields) for i in infos], dtype=str),
    }


def _dispatch(request: dict) -> dict:
    from .._io import load_model
    from ..api import split_fit_options  # importing the API registers the methods
    from ..models._registry import get_method

    task = str(request.get("task", "annotate"))
    if task == "methods":
        return _methods_table()
    if task == "echo":
        return _echo(request)
    method = str(request["method"])
    if method == "consensus":
        return _consensus(request)
    info = get_method(method)
    compute, est_cls = info.compute, info.estimator
    options = coerce_options(request.get("options"), est_cls)
    seed = int(request.get("seed") or 0)
    device = str(request.get("device") or "auto")
    verbose = bool(request.get("verbose", True))
    labels_key = request.get("labels_key")
    t_read = time.perf_counter()
    query = _dataset(request.get("query"), "query")
    reference = _dataset(request.get("reference"), "reference")
    read_s = time.perf_counter() - t_read

    if task == "train":
        if info.reference != "none" and (reference is None or isinstance(reference, tuple)):
            raise ValueError(
                "Training needs a labelled reference dataset (a Seurat object, SingleCellExperiment or .h5ad file)."
            )
        options, fit_options = split_fit_options(est_cls, options)
        model = est_cls(seed=seed, device=device, verbose=verbose, **options)
        info.fit(model, reference, query, labels_key=labels_key or "cell_type", **fit_options)
        path = Path(str(request["path"]))
        model.save(path)
        return {
            "kind": "model",
            "method": method,
            "path": str(path.resolve()),
            "classes": np.asarray(model.classes_, dtype=str),
            "n_genes": int(len(model.genes_)),
            "params_json": _to_json(
                {"config": dataclasses.asdict(model.config), "seed": seed, "training": model.fit_info_}
            ),
        }

    if query is None or isinstance(query, tuple):
        raise ValueError("internal: the query must be a dataset.")
    if task == "annotate":
        # RunItClust sends "annotate": a clustering method that needs a labelled
        # reference runs here too, and its result goes back as a clustering
        if info.kind != "annotation" and info.reference != "required":
            raise ValueError(f"{method!r} is a clustering method; use its Run function for clustering.")
        if isinstance(reference, tuple):  # a saved model
            _, meta = load_model(reference[1])
            if meta.get("method") != method:
                raise ValueError(
                    f"{reference[1]!r} holds a {meta.get('method')!r} model, not a {method!r} one; "
                    f"use the Run function of {meta.get('method')!r} or train a {method!r} model."
                )
            model = est_cls.load(reference[1], device=device, verbose=verbose, **options)
            result = info.apply(model, query)
        elif reference is None:
            raise ValueError("A reference is needed: a labelled object, an .h5ad file or a saved model directory.")
        else:
            result = compute(
                query,
                reference,
                labels_key=labels_key or "cell_type",
                seed=seed,
                device=device,
                verbose=verbose,
                **options,
            )
    elif task == "cluster":
        if isinstance(reference, tuple):
            raise ValueError(f"{method!r} does not take a saved model as reference.")
        kw = dict(options)
        if "labels_key" in request:  # sent only to methods that take labels; None is meaningful
            kw["labels_key"] = labels_key
        n_clusters = request.get("n_clusters")
        n_kw = {}  # ItClust takes no n_clusters: sent only where the method has one or R set it
        if n_clusters is not None or "n_clusters" in inspect.signature(compute).parameters:
            n_kw["n_clusters"] = None if n_clusters is None else int(n_clusters)
        result = compute(query, reference=reference, **n_kw, seed=seed, device=device, verbose=verbose, **kw)
    else:
        raise ValueError(f"internal: unknown task {task!r}.")
    out = result_to_dict(result)
    out["read_s"] = read_s
    return out


def _consensus(request: dict) -> dict:
    """RunConsensus: the members (``options$methods``) trained on the reference and combined."""
    from .._consensus import DEFAULT_METHODS, compute_consensus

    if request.get("task", "annotate") != "annotate":
        raise ValueError("The consensus is an annotation: use RunConsensus().")
    from ..models._registry import get_method

    options = coerce_options(request.get("options"), None)  # R names (member.options) -> Python names
    methods = options.pop("methods", None) or DEFAULT_METHODS
    methods = [str(m) for m in (methods if isinstance(methods, (list, tuple, np.ndarray)) else [methods])]
    reject = bool(options.pop("reject", True))
    members = options.pop("member_options", None) or {}
    member_options = {str(m): coerce_options(o, get_method(str(m)).estimator) for m, o in members.items()}
    if options:
        raise ValueError(
            f"RunConsensus() takes no method options ({', '.join(sorted(options))}); "
            "pass them per member as member.options = list(scnym = list(...))."
        )
    query = _dataset(request.get("query"), "query")
    reference = _dataset(request.get("reference"), "reference")
    if reference is None or isinstance(reference, tuple):
        raise ValueError("The consensus trains its members on a labelled reference; a saved model cannot be used.")
    result = compute_consensus(
        query,
        reference,
        methods=methods,
        labels_key=request.get("labels_key") or "cell_type",
        reject=reject,
        seed=int(request.get("seed") or 0),
        device=str(request.get("device") or "auto"),
        verbose=bool(request.get("verbose", True)),
        options=member_options,
    )
    return result_to_dict(result)


def _echo(request: dict) -> dict:
    """The bridge without a model (for benchmarks/bench_r_overhead.py): read the datasets R sent and answer
    with a result of the real shapes (uniform probabilities over the reference's classes, a zero embedding)."""
    query = _dataset(request.get("query"), "query")
    reference = _dataset(request.get("reference"), "reference")
    classes = ["a", "b"]
    if reference is not None and not isinstance(reference, tuple) and request.get("labels_key") in reference.obs:
        classes = sorted(pd.unique(reference.obs[request["labels_key"]].astype(str)).tolist())
    n, k = query.n_obs, len(classes)
    probs = np.full((n, k), 1.0 / k)
    labels = np.asarray([classes[0]] * n, dtype=object)
    n_dims = int((request.get("options") or {}).get("n_dims", 256)) if isinstance(request.get("options"), dict) else 256
    result = AnnotationResult(
        obs_names=query.obs_names,
        classes=classes,
        probabilities=probs,
        labels=labels,
        raw_labels=labels,
        confidence=probs.max(axis=1),
        embedding=np.zeros((n, n_dims)),
        method="echo",
        params={"timings": {"total_s": 0.0}},
    )
    return result_to_dict(result)


# ============================================================================ results to R
def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _to_json(params: dict) -> str:
    return json.dumps(_jsonable(params))


def result_to_dict(result) -> dict:
    """An AnnotationResult/ClusteringResult as plain arrays for R (names verbatim, no Python objects)."""
    cells = np.asarray(pd.Index(result.obs_names).astype(str), dtype=str)
    emb = None if result.embedding is None else np.asarray(result.embedding, dtype=np.float64)
    if isinstance(result, AnnotationResult):
        extra = None
        if hasattr(result, "member_columns"):  # a consensus: the agreement and each member's label and score
            cols = {"agreement": result.agreement, **result.member_columns()}
            extra = {k.replace("_confidence", ".score"): np.asarray(v) for k, v in cols.items()}
            extra = {k: v.astype(str) if v.dtype.kind in "USO" else v.astype(np.float64) for k, v in extra.items()}
        return {
            "kind": "annotation",
            "method": result.method,
            "cells": cells,
            "labels": np.asarray(result.labels, dtype=str),
            "raw_labels": np.asarray(result.raw_labels, dtype=str),
            "score": np.asarray(result.confidence, dtype=np.float64),
            "classes": np.asarray(result.classes, dtype=str),
            "probabilities": np.asarray(result.probabilities, dtype=np.float64),
            "embedding": emb,
            "rejection": bool(result.rejection),
            "extra": extra,
            "params_json": _to_json(result.params),
        }
    if isinstance(result, ClusteringResult):
        clusters = np.asarray(result.clusters).astype(str)
        # per-cell fields a method adds in a ClusteringResult subclass (e.g. ItClust's cell_score)
        base = {f.name for f in dataclasses.fields(ClusteringResult)}
        extra = {}
        for f in dataclasses.fields(result):
            v = getattr(result, f.name)
            if f.name in base or v is None:
                continue
            arr = np.asarray(v)
            if arr.ndim == 1 and len(arr) == len(cells):
                extra[f.name] = arr.astype(str) if arr.dtype.kind in "USO" else arr.astype(np.float64)
        return {
            "kind": "clustering",
            "method": result.method,
            "cells": cells,
            "clusters": clusters,
            "cluster_levels": np.asarray(sorted(pd.unique(clusters), key=lambda c: (len(c), c)), dtype=str),
            "score": np.asarray(result.confidence, dtype=np.float64),
            "cell_types": None if result.cell_types is None else np.asarray(result.cell_types, dtype=str),
            "probabilities": None
            if result.probabilities is None
            else np.asarray(result.probabilities, dtype=np.float64),
            "embedding": emb,
            "cluster_map_json": _to_json({str(k): str(v) for k, v in (result.cluster_map or {}).items()}),
            "extra": extra or None,
            "params_json": _to_json(result.params),
        }
    raise TypeError(f"internal: cannot send a {type(result).__name__} to R.")
