"""The rpy2 side of the R bridge: Python hosts R (mixed pipelines, the tests, the CLI with ``.rds`` files).

R must not touch reticulate in this mode (with reticulate 1.28 the first R
garbage collection of a reticulate object aborts the process), so
:func:`register` puts an R function made with ``rpy2.rinterface.rternalize``
into ``options(pybridge.rpy2_callback=)``. The R entry points see it and hand
their request, with ``SingleCellExperiment`` objects inside, to that callback;
it converts them with anndata2ri here, runs the same
:func:`~pybridge.r._handler.run_from_r` as reticulate would, and returns plain
R vectors and matrices.

Also here: :func:`run_from_r_handoff`, the anndata2ri path inside an R-hosted
session (reticulate >= 1.31), where rpy2 attaches to the running R.

rpy2 is imported only inside the functions that need it (see :mod:`pybridge.r`).
"""

from __future__ import annotations

import atexit
import gc
import math
import sys
import time
import traceback
import warnings

import numpy as np

from .._settings import logger
from ._handler import _python_error_text, run_from_r

#: R option under which the rpy2 callback is registered (read by R/python.R).
R_CALLBACK_OPTION = "pybridge.rpy2_callback"
#: R option holding an environment through which R hands objects to Python's rpy2 (reticulate >= 1.31 only).
R_HANDOFF_OPTION = "pybridge.handoff"

_keepalive: list = []  # the rternalized callbacks handed to R (non-empty once registered)


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
        out = {
            "error": "Interrupted in Python (KeyboardInterrupt); the object was not changed.",
            "error_type": "KeyboardInterrupt",
        }
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

    Called by every helper of :mod:`pybridge.r` that uses R; call it yourself before running
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


# ============================================================================ R hosts Python, anndata2ri path
def run_from_r_handoff(request: dict) -> dict:
    """The anndata2ri path inside an R-hosted session (reticulate >= 1.31 only; R checks the version).

    R leaves the SingleCellExperiment objects in the environment registered as
    ``options(pybridge.handoff=)`` and sends their names (``{"kind": "handoff",
    "name": ...}``); rpy2, attached to the running R, converts them here.

    Nothing of this shows in the user's R session: rpy2's notice that it attaches
    to an R it did not start (a Python warning and a log line, the first time),
    and the R warnings of the conversion itself (anndata2ri's ``importr()`` lists
    the installed packages and warns about every empty library folder, e.g.
    Debian's ``/usr/local/lib/R/site-library``; R would print them when the
    ``Run*`` call returns, out of reach of its handlers) are about the bridge,
    not the data. R warnings are off (``options(warn = -1)``) only while the
    objects are converted; the model runs with the user's setting.
    """
    import logging

    rpy2_logger = logging.getLogger("rpy2.rinterface_lib.embedded")
    level = rpy2_logger.level
    rpy2_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="R was initialized outside of rpy2")
            import rpy2.robjects as ro
    finally:
        rpy2_logger.setLevel(level)

    r_options = ro.r("options")
    env = ro.r("getOption")(R_HANDOFF_OPTION)
    req = dict(request)
    old = r_options(warn=-1)
    try:
        for key in ("query", "reference"):
            p = req.get(key)
            if isinstance(p, dict) and p.get("kind") == "handoff":
                req[key] = sce_to_anndata(env[str(p["name"])])
    finally:
        r_options(old)
    return run_from_r(req)


# registered automatically when this module is imported into a Python process that already runs R through rpy2
if "rpy2.rinterface" in sys.modules:  # pragma: no cover - depends on import order
    try:
        import rpy2.rinterface as _ri

        if _ri.isinitialized():
            register()
    except Exception:
        pass
