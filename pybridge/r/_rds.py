"""``.rds`` helpers for Python users of R objects (through rpy2 and anndata2ri); the CLI uses them too.

:func:`read_rds` (Seurat or SCE ``.rds`` -> AnnData with raw counts in ``X``),
:func:`write_result_rds` (write a result into the R object with the R
package's own store code, and save it) and :func:`annotate_rds` (both, around a
method). The R package must be installed in the R that rpy2 runs.
"""

from __future__ import annotations

from pathlib import Path

from ._handler import result_to_dict
from ._rpy2_bridge import _rpy2, _to_r, sce_to_anndata


def _r_package(ro):
    ok = ro.r('isTRUE(requireNamespace("pybridge", quietly = TRUE))')[0]
    if not ok:
        root = Path(__file__).resolve().parents[2]  # the repository: pybridge/r/_rds.py
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


def write_result_rds(
    source_rds, out_rds, result, key_added: str | None = None, *, function: str = "pybridge.write_result_rds"
):
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


def annotate_rds(
    query_rds,
    reference,
    out_rds,
    *,
    method: str = "scnym",
    labels_key: str = "cell_type",
    key_added: str | None = None,
    seed: int = 0,
    device: str = "auto",
    verbose: bool | None = None,
    **options,
):
    """Annotate the Seurat/SCE object in ``query_rds`` and save it, with the new metadata, as ``out_rds``.

    ``reference`` may be an ``.rds`` file (Seurat/SCE), an ``.h5ad`` file, an
    AnnData or a saved model directory. Returns the result object.
    """
    import anndata as ad

    from .. import api  # noqa: F401 (importing the API registers the methods)
    from .._io import load_model
    from ..models._registry import get_method

    query = read_rds(query_rds)
    info = get_method(method)
    if isinstance(reference, (str, Path)) and Path(reference).expanduser().is_dir():
        _, meta = load_model(reference, method)
        result = info.estimator.load(reference, device=device, verbose=verbose, **options).annotate(query)
    else:
        if isinstance(reference, (str, Path)):
            reference = read_rds(reference) if str(reference).lower().endswith(".rds") else ad.read_h5ad(reference)
        # one calling convention for every method: compute(query, reference=None, **options)
        result = info.compute(
            query, reference=reference, labels_key=labels_key, seed=seed, device=device, verbose=verbose, **options
        )
    write_result_rds(query_rds, out_rds, result, key_added or method, function="pybridge.annotate_rds")
    return result
