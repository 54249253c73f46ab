"""The Python side of the R package, and helpers for Python users of R objects.

The R package ``pybridge`` (``RunScNym``, ``TrainScNym``, ... in ``R/``) calls
into this package in one of two ways:

* **R hosts Python** (an R session, RStudio): R uses reticulate, imports
  ``pybridge.r`` and calls :func:`run_from_r` with a request dict whose count
  matrices arrive as ``scipy.sparse`` matrices straight from the ``dgCMatrix``.
* **Python hosts R** (rpy2: mixed pipelines, the tests, the CLI with ``.rds``
  files): R must not touch reticulate in this mode, so :func:`register` puts an
  rpy2 callback into ``options(pybridge.rpy2_callback=)``; the R entry points
  hand their request, with ``SingleCellExperiment`` objects inside, to that
  callback, which converts them with anndata2ri and runs the same
  :func:`run_from_r`.

Either way the answer is a dict of plain arrays (see :func:`result_to_dict`),
never a Python object that R would have to keep alive; R's ``store.R`` writes
it into the Seurat or SingleCellExperiment object.

For Python users of R objects: :func:`read_rds` (Seurat or SCE ``.rds`` ->
AnnData with raw counts in ``X``), :func:`write_result_rds` (write a result into
the R object with the R package's own store code, and save it) and
:func:`annotate_rds` (both, around a method). The CLI uses these for ``.rds``
input and output.

Layout: ``_handler.py`` the request handler (requests in, plain arrays out;
no R, no rpy2), ``_rpy2_bridge.py`` the rpy2 side (callback, registration,
R <-> Python conversion, the reticulate handoff), ``_rds.py`` the ``.rds``
helpers. The names below are the package's interface (R calls
``run_from_r`` and ``run_from_r_handoff`` by name).

Importing this package never imports rpy2: inside an R session hosted by
reticulate that import would start a second R. rpy2 is imported by the
functions that need it.
"""

from __future__ import annotations

# every name of the former pybridge/r.py, the private ones too (the tests and examples use
# _keepalive, _release_callbacks and _rpy2)
# ruff: noqa: F401
from ._handler import (
    _adata_from_matrix_payload,
    _dataset,
    _dispatch,
    _echo,
    _field_types,
    _jsonable,
    _methods_table,
    _python_error_text,
    _str_list,
    _to_json,
    _whole_to_int,
    coerce_options,
    result_to_dict,
    run_from_r,
)
from ._rds import _r_call, _r_package, annotate_rds, read_rds, write_result_rds
from ._rpy2_bridge import (
    R_CALLBACK_OPTION,
    R_HANDOFF_OPTION,
    _callback,
    _from_r,
    _keepalive,
    _release_callbacks,
    _rpy2,
    _to_r,
    register,
    run_from_r_handoff,
    sce_to_anndata,
)

__all__ = [
    "R_CALLBACK_OPTION",
    "R_HANDOFF_OPTION",
    "annotate_rds",
    "coerce_options",
    "read_rds",
    "register",
    "result_to_dict",
    "run_from_r",
    "run_from_r_handoff",
    "sce_to_anndata",
    "write_result_rds",
]
