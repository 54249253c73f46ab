"""The Python side of the R package, and helpers for Python users of R objects.

The R package ``pybridge`` (``RunScNym``, ``TrainScNym``, ... in ``R/``) calls
into this module in one of two ways:

* **R hosts Python** (an R session, RStudio): R uses reticulate and calls
  :func:`run_from_r` with a request dict whose count matrices arrive as
  ``scipy.sparse.csc_matrix`` (genes x cells, straight from the ``dgCMatrix``;
  ``.T`` makes it cells x genes CSR without a copy), with the cell and gene
  names passed explicitly and the needed metadata columns as a DataFrame.
* **Python hosts R** (rpy2: mixed pipelines, the tests, the CLI with ``.rds``
  files): R must not touch reticulate in this mode (with reticulate 1.28 the
  first R garbage collection of a reticulate object aborts the process), so
  :func:`register` puts an R function made with ``rpy2.rinterface.rternalize``
  into ``options(pybridge.rpy2_callback=)``. The R entry points see it and hand
  their request, with ``SingleCellExperiment`` objects inside, to that
  callback; it converts them with anndata2ri here, runs the same
  :func:`run_from_r`, and returns plain R vectors and matrices.

Either way the answer is a dict of plain arrays (see :func:`result_to_dict`),
never a Python object that R would have to keep alive; R's ``store.R`` writes
it into the Seurat or SingleCellExperiment object.

For Python users of R objects: :func:`read_rds` (Seurat or SCE ``.rds`` ->
AnnData with raw counts in ``X``), :func:`write_result_rds` (write a result into
the R object with the R package's own store code, and save it) and
:func:`annotate_rds` (both, around a method). The CLI uses these for ``.rds``
input and output.

Importing this module never imports rpy2: inside an R session hosted by
reticulate that import would start a second R. rpy2 is imported by the
functions that need it.
"""
from __future__ import annotations

import atexit
import dataclasses
import gc
import inspect
import json
import math
import sys
import time
import traceback
import types
import typing
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._settings import logger
from .result import AnnotationResult, ClusteringResult

#: R option under which the rpy2 callback is registered (read by R/python.R).
R_CALLBACK_OPTION = "pybridge.rpy2_callback"
#: R option holding an environment through which R hands objects to Python's rpy2 (reticulate >= 1.31 only).
R_HANDOFF_OPTION = "pybridge.handoff"

_keepalive: list = []  # the rternalized callbacks handed to R (non-empty once registered)


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
            obs[str(col)] = meta[col].to_numpy() if not isinstance(meta[col].dtype, pd.CategoricalDtype) \
                else pd.Categorical(meta[col].astype(object), categories=meta[col].cat.categories)
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
            raise ValueError(f"Could not read the {what} {str(path)!r} as .h5ad ({type(err).__name__}: {err}).") from None
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

    ``request`` keys: ``task`` ("annotate", "cluster" or "train"), ``method``
    (a key of :data:`pybridge.api.COMPUTE`), ``query`` and ``reference`` (see
    :func:`_dataset`), ``labels_key``, ``seed``, ``device``, ``verbose``,
    ``n_clusters``, ``path`` (train) and ``options`` (method options).

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
            out = {"error": _python_error_text(err), "error_type": type(err).__name__,
                   "traceback": traceback.format_exc()}
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


def _dispatch(request: dict) -> dict:
    from ._io import load_model
    from .api import get_method, split_fit_options

    task = str(request.get("task", "annotate"))
    if task == "methods":
        from .api import COMPUTE

        names = sorted(COMPUTE)
        return {"name": np.asarray(names, dtype=str), "kind": np.asarray([COMPUTE[n][0] for n in names], dtype=str),
                "trainable": np.asarray([COMPUTE[n][2] is not None for n in names], dtype=bool)}
    if task == "echo":
        return _echo(request)
    method = str(request["method"])
    kind, compute, est_cls = get_method(method)
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
        if est_cls is None:
            raise ValueError(f"Method {method!r} has no reusable model; use its Run function directly.")
        if reference is None or isinstance(reference, tuple):
            raise ValueError("Training needs a labelled reference dataset (a Seurat object, SingleCellExperiment or .h5ad file).")
        options, fit_options = split_fit_options(est_cls, options)
        model = est_cls(seed=seed, device=device, verbose=verbose, **options)
        fit_kw = {"labels_key": labels_key or "cell_type", **fit_options}
        if query is not None:
            if "query" not in inspect.signature(model.fit).parameters:
                raise ValueError(f"{method} trains on the reference alone; do not pass a query.")
            fit_kw["query"] = query
        model.fit(reference, **fit_kw)
        path = Path(str(request["path"]))
        model.save(path)
        return {
            "kind": "model",
            "method": method,
            "path": str(path.resolve()),
            "classes": np.asarray(model.classes_, dtype=str),
            "n_genes": int(len(model.genes_)),
            "params_json": _to_json({"config": dataclasses.asdict(model.config), "seed": seed,
                                     "training": model.fit_info_}),
        }

    if query is None or isinstance(query, tuple):
        raise ValueError("internal: the query must be a dataset.")
    if task == "annotate":
        if kind != "annotation":
            raise ValueError(f"{method!r} is a clustering method; use its Run function for clustering.")
        if isinstance(reference, tuple):  # a saved model
            _, meta = load_model(reference[1])
            if meta.get("method") != method:
                raise ValueError(
                    f"{reference[1]!r} holds a {meta.get('method')!r} model, not a {method!r} one; "
                    f"use the Run function of {meta.get('method')!r} or train a {method!r} model."
                )
            model = est_cls.load(reference[1], device=device, verbose=verbose, **options)
            result = model.annotate(query)
        elif reference is None:
            raise ValueError("A reference is needed: a labelled object, an .h5ad file or a saved model directory.")
        else:
            result = compute(query, reference, labels_key=labels_key or "cell_type", seed=seed, device=device,
                             verbose=verbose, **options)
    elif task == "cluster":
        if isinstance(reference, tuple):
            raise ValueError(f"{method!r} does not take a saved model as reference.")
        kw = dict(options)
        if "labels_key" in request:  # sent only to methods that take labels; None is meaningful
            kw["labels_key"] = labels_key
        n_clusters = request.get("n_clusters")
        result = compute(query, reference=reference, n_clusters=None if n_clusters is None else int(n_clusters),
                         seed=seed, device=device, verbose=verbose, **kw)
    else:
        raise ValueError(f"internal: unknown task {task!r}.")
    out = result_to_dict(result)
    out["read_s"] = read_s
    return out


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
    result = AnnotationResult(obs_names=query.obs_names, classes=classes, probabilities=probs, labels=labels,
                              raw_labels=labels, confidence=probs.max(axis=1), embedding=np.zeros((n, n_dims)),
                              method="echo", params={"timings": {"total_s": 0.0}})
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
            "probabilities": None if result.probabilities is None else np.asarray(result.probabilities, dtype=np.float64),
            "embedding": emb,
            "cluster_map_json": _to_json({str(k): str(v) for k, v in (result.cluster_map or {}).items()}),
            "extra": extra or None,
            "params_json": _to_json(result.params),
        }
    raise TypeError(f"internal: cannot send a {type(result).__name__} to R.")


# ============================================================================ rpy2: Python hosts R
def _rpy2():
    """Import rpy2 (starting the embedded R if needed) and register the callback."""
    try:
        import rpy2.rinterface as ri
        import rpy2.robjects as ro
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            f"rpy2 is needed to work with R objects from Python ({err}). Install it with "
            "`pip install -c constraints.txt 'pybridge[r]'` (rpy2 3.5.x for R < 4.5)."
        ) from None
    register()
    return ri, ro


def _from_r(x):
    """An rinterface object -> Python (SCE -> AnnData through anndata2ri; length-1 vectors -> scalars)."""
    import rpy2.rinterface as ri

    if x is ri.NULL or isinstance(x, ri.NULLType):
        return None
    if isinstance(x, ri.SexpS4):
        if "SingleCellExperiment" in set(x.rclass):
            return sce_to_anndata(x)
        raise ValueError(f"internal: cannot convert an R object of class {list(x.rclass)} in Python.")
    if isinstance(x, ri.ListSexpVector):
        names = x.names
        items = [_from_r(v) for v in x]
        if names is not ri.NULL and not isinstance(names, ri.NULLType):
            return {str(n): v for n, v in zip(names, items)}
        return items
    if isinstance(x, ri.StrSexpVector):
        vals = [None if v is ri.NA_Character else str(v) for v in x]
    elif isinstance(x, ri.BoolSexpVector):
        vals = [None if v is ri.NA_Logical else bool(v) for v in x]
    elif isinstance(x, ri.IntSexpVector):
        vals = [None if v is ri.NA_Integer else int(v) for v in x]
    elif isinstance(x, ri.FloatSexpVector):
        vals = [None if (isinstance(v, float) and math.isnan(v)) else float(v) for v in x]
    else:
        raise ValueError(f"internal: cannot convert R type {type(x).__name__} in Python.")
    return vals[0] if len(vals) == 1 else vals


def _to_r(obj):
    """Python dict/arrays/scalars -> rinterface objects (a named list for a dict)."""
    import rpy2.rinterface as ri

    if obj is None:
        return ri.NULL
    if isinstance(obj, dict):
        keys = list(obj)
        out = ri.ListSexpVector([_to_r(obj[k]) for k in keys])
        out.do_slot_assign("names", ri.StrSexpVector(keys))
        return out
    if isinstance(obj, (bool, np.bool_)):
        return ri.BoolSexpVector([bool(obj)])
    if isinstance(obj, (int, np.integer)):
        return ri.IntSexpVector([int(obj)])
    if isinstance(obj, (float, np.floating)):
        return ri.FloatSexpVector([float(obj)])
    if isinstance(obj, str):
        return ri.StrSexpVector([obj])
    if isinstance(obj, (list, tuple)):
        if all(isinstance(v, str) for v in obj):
            return ri.StrSexpVector(list(obj))
        return ri.ListSexpVector([_to_r(v) for v in obj])
    arr = np.asarray(obj)
    if arr.dtype.kind in "USO":
        vec = ri.StrSexpVector([str(v) for v in arr.ravel(order="F")])
    elif arr.dtype.kind == "b":
        vec = ri.BoolSexpVector(arr.ravel(order="F").tolist())
    elif arr.dtype.kind in "iu":
        vec = ri.IntSexpVector(arr.astype(np.int64).ravel(order="F").tolist())
    else:
        vec = ri.FloatSexpVector(np.ascontiguousarray(arr.astype(np.float64).ravel(order="F")))
    if arr.ndim == 2:
        vec.do_slot_assign("dim", ri.IntSexpVector(list(arr.shape)))
    return vec


def sce_to_anndata(sce):
    """A SingleCellExperiment (rpy2 object) -> AnnData with anndata2ri (first assay -> X)."""
    import anndata2ri
    from rpy2.robjects.conversion import localconverter

    with localconverter(anndata2ri.converter) as cv, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = cv.rpy2py(sce)
    adata.obs_names = adata.obs_names.astype(str)
    adata.var_names = adata.var_names.astype(str)
    return adata


def _callback(request):
    """What R calls in rpy2-hosted mode: an R request list in, an R result list out (errors as data)."""
    import rpy2.rinterface as ri

    try:
        t0 = time.perf_counter()
        req = _from_r(request)
        convert_s = time.perf_counter() - t0
        out = run_from_r(req)
        out["anndata2ri_s"] = convert_s
    except KeyboardInterrupt:  # Ctrl+C while R waits on Python: R signals an interrupt (R/python.R)
        out = {"error": "Interrupted in Python (KeyboardInterrupt); the object was not changed.",
               "error_type": "KeyboardInterrupt"}
    except Exception as err:
        out = {"error": _python_error_text(err), "error_type": type(err).__name__, "traceback": traceback.format_exc()}
    try:
        return _to_r(out)
    except Exception as err:  # pragma: no cover - last resort, R still gets an error to raise
        msg = ri.StrSexpVector([f"internal: could not return the result to R ({type(err).__name__}: {err})"])
        res = ri.ListSexpVector([msg])
        res.do_slot_assign("names", ri.StrSexpVector(["error"]))
        return res


def register() -> None:
    """Register the rpy2 callback in the embedded R (``options(pybridge.rpy2_callback=)``).

    Called by every helper here that uses R; call it yourself before running
    ``pybridge::RunScNym(...)`` through ``rpy2.robjects.r``. Idempotent.
    """
    import rpy2.rinterface as ri
    import rpy2.robjects as ro

    if _keepalive and isinstance(ro.r("getOption")(R_CALLBACK_OPTION), ri.SexpClosure):
        return
    fn = ri.rternalize(_callback)
    # keep the Python side of the R closure alive: rpy2 holds only a handle, and
    # R calling a collected handle aborts the process
    if not _keepalive:
        atexit.unregister(_release_callbacks)  # registered once, after rpy2's own exit handler (they run last first)
        atexit.register(_release_callbacks)
    _keepalive.append(fn)
    ro.r("options")(**{R_CALLBACK_OPTION: fn})
    logger.info("registered the pybridge rpy2 callback in R")


def _release_callbacks() -> None:
    """At exit, while rpy2 is still whole: unset the R option and drop the handles.

    Left to the interpreter's teardown, rpy2's finalizers run after its own
    module globals are gone and print ``TypeError: 'NoneType' object is not
    callable`` (harmless, but noise at the end of every session).
    """
    try:
        import rpy2.rinterface as ri
        import rpy2.robjects as ro

        ro.r("options")(**{R_CALLBACK_OPTION: ri.NULL})
    except Exception:  # R already ended: nothing left to unset
        pass
    _keepalive.clear()
    gc.collect()


def _r_package(ro):
    ok = ro.r('isTRUE(requireNamespace("pybridge", quietly = TRUE))')[0]
    if not ok:
        root = Path(__file__).resolve().parents[1]
        raise RuntimeError(
            "The R package pybridge is not installed in this R "
            f"({ro.r('R.home()')[0]}); install it with `R CMD INSTALL {root}` (or run scripts/setup.sh)."
        )


def _r_call(ro, r_function: str, *args, **kwargs):
    """Call an internal R function of the R package and surface R errors as ValueError."""
    from rpy2.rinterface_lib.embedded import RRuntimeError

    f = ro.r(f"pybridge:::{r_function}")
    try:
        return f(*args, **kwargs)
    except RRuntimeError as err:
        msg = str(err).strip()
        raise ValueError(msg.splitlines()[0] if msg else "R error") from None


def read_rds(path, *, assay: str | None = None):
    """Read a Seurat or SingleCellExperiment ``.rds`` file into AnnData (through rpy2 and anndata2ri).

    ``X`` holds the raw counts (Seurat: the ``counts`` layer of ``assay``, by
    default the object's default assay; SCE: the ``assay`` assay, default
    ``"counts"``), ``obs`` every cell metadata column, ``var_names`` the genes.
    Other SCE assays become layers and reduced dimensions ``obsm`` entries.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist.")
    ri, ro = _rpy2()
    _r_package(ro)
    obj = ro.r("readRDS")(str(path))
    sce = _r_call(ro, ".for_anndata2ri", obj, assay=ro.NULL if assay is None else assay, what=f"file {path.name}")
    adata = sce_to_anndata(sce)
    return adata


def write_result_rds(source_rds, out_rds, result, key_added: str | None = None, *,
                     function: str = "pybridge.write_result_rds"):
    """Write ``result`` into the R object saved in ``source_rds`` and save it as ``out_rds``.

    Uses the R package's own store code, so the columns, reduction, assay or
    metadata entries and the command log are exactly those ``RunScNym`` and
    friends write. Every pre-existing metadata column is kept.
    """
    ri, ro = _rpy2()
    _r_package(ro)
    name = key_added or result.method
    obj = ro.r("readRDS")(str(source_rds))
    res = _to_r(result_to_dict(result))
    out = _r_call(ro, ".store_from_python", obj, res, name=name, fn=function)
    ro.r("saveRDS")(out, str(out_rds))
    return Path(out_rds)


def annotate_rds(query_rds, reference, out_rds, *, method: str = "scnym", labels_key: str = "cell_type",
                 key_added: str | None = None, seed: int = 0, device: str = "auto", verbose: bool | None = None,
                 **options):
    """Annotate the Seurat/SCE object in ``query_rds`` and save it, with the new metadata, as ``out_rds``.

    ``reference`` may be an ``.rds`` file (Seurat/SCE), an ``.h5ad`` file, an
    AnnData or a saved model directory. Returns the result object.
    """
    import anndata as ad

    from ._io import load_model
    from .api import get_method

    query = read_rds(query_rds)
    kind, compute, est_cls = get_method(method)
    if isinstance(reference, (str, Path)) and Path(reference).expanduser().is_dir():
        _, meta = load_model(reference, method)
        result = est_cls.load(reference, device=device, verbose=verbose, **options).annotate(query)
    else:
        if isinstance(reference, (str, Path)):
            reference = read_rds(reference) if str(reference).lower().endswith(".rds") else ad.read_h5ad(reference)
        if kind == "annotation":
            result = compute(query, reference, labels_key=labels_key, seed=seed, device=device, verbose=verbose,
                             **options)
        else:
            result = compute(query, reference=reference, labels_key=labels_key, seed=seed, device=device,
                             verbose=verbose, **options)
    write_result_rds(query_rds, out_rds, result, key_added or method, function="pybridge.annotate_rds")
    return result


# ============================================================================ R hosts Python, anndata2ri path
def run_from_r_handoff(request: dict) -> dict:
    """The anndata2ri path inside an R-hosted session (reticulate >= 1.31 only; R checks the version).

    R leaves the SingleCellExperiment objects in the environment registered as
    ``options(pybridge.handoff=)`` and sends their names (``{"kind": "handoff",
    "name": ...}``); rpy2, attached to the running R, converts them here.
    """
    import rpy2.robjects as ro

    env = ro.r("getOption")(R_HANDOFF_OPTION)
    req = dict(request)
    for key in ("query", "reference"):
        p = req.get(key)
        if isinstance(p, dict) and p.get("kind") == "handoff":
            req[key] = sce_to_anndata(env[str(p["name"])])
    return run_from_r(req)


# registered automatically when this module is imported into a Python process that already runs R through rpy2
if "rpy2.rinterface" in sys.modules:  # pragma: no cover - depends on import order
    try:
        import rpy2.rinterface as _ri

        if _ri.isinitialized():
            register()
    except Exception:
        pass
