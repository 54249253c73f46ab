"""The R entry points driven from Python through rpy2 (Python hosts R).

In this mode the R package must not use reticulate; ``pybridge.r.register()``
puts a callback into R and ``RunScNym`` hands its SingleCellExperiment to it
(anndata2ri conversion in Python). Checked here: the metadata written into
Seurat objects and SCEs built in R from a real dataset, parity with the Python
API under the same seed, the ``.rds`` helpers and CLI keeping every existing
metadata column, errors crossing back into Python, and a clean process exit
(the reticulate GIL hazard would abort with status 134).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import accuracy, load

pytestmark = pytest.mark.r

EPOCHS = 15
ROOT = Path(__file__).resolve().parents[3]


def _rpy2_or_skip():
    try:
        import anndata2ri  # noqa: F401
        import rpy2.robjects as ro
    except Exception as err:  # ImportError, or R not found by rpy2
        pytest.skip(f"rpy2/anndata2ri/R not available: {err}")
    if not ro.r('isTRUE(requireNamespace("pybridge", quietly = TRUE))')[0]:
        pytest.skip("the R package pybridge is not installed (R CMD INSTALL .)")
    for pkg in ("SeuratObject", "SingleCellExperiment"):
        if not ro.r(f'isTRUE(requireNamespace("{pkg}", quietly = TRUE))')[0]:
            pytest.skip(f"R package {pkg} not installed")
    return ro


@pytest.fixture(scope="module")
def r(panc8):
    """R with the package loaded, the bridge registered, and panc8 (inDrop query / others) as Seurat and SCE."""
    ro = _rpy2_or_skip()
    import anndata2ri
    from rpy2.robjects.conversion import localconverter

    import pybridge.r as pr

    pr.register()
    adata = panc8.copy()
    adata.obs = adata.obs[["tech", "cell_type", "batch"]].copy()
    adata.obs["n_genes"] = np.asarray((adata.X > 0).sum(axis=1)).ravel().astype(np.int32)
    adata.uns = {}
    with localconverter(anndata2ri.converter):
        ro.globalenv["panc8_sce"] = adata
    ro.r(
        """
        suppressPackageStartupMessages({library(pybridge); library(SeuratObject); library(SingleCellExperiment)})
        counts <- as(assay(panc8_sce, "X"), "CsparseMatrix")
        meta <- as.data.frame(colData(panc8_sce))
        panc8_seu <- CreateSeuratObject(counts = counts, meta.data = meta)
        sce <- SingleCellExperiment(assays = list(counts = counts), colData = colData(panc8_sce))
        sce_q <- sce[, sce$batch == "indrop"]; sce_r <- sce[, sce$batch != "indrop"]
        seu_q <- subset(panc8_seu, batch == "indrop"); seu_r <- subset(panc8_seu, batch != "indrop")
        """
    )
    return ro


def _col(ro, expr):
    return list(ro.r(f"as.character({expr})"))


def _num(ro, expr):
    return np.asarray(ro.r(f"as.numeric({expr})"), dtype=float)


@pytest.fixture(scope="module")
def python_result(panc8):
    import pybridge

    q = panc8[panc8.obs["batch"] == "indrop"].copy()
    ref = panc8[panc8.obs["batch"] != "indrop"].copy()
    pybridge.scnym(q, ref, seed=0, device="cpu", verbose=False, n_epochs=EPOCHS)
    return q


@pytest.fixture(scope="module")
def seurat_out(r):
    r.r(f'seu_out <- RunScNym(seu_q, seu_r, n_epochs = {EPOCHS}, device = "cpu", verbose = FALSE)')
    return r


def test_seurat_metadata_through_rpy2(seurat_out, python_result):
    ro = seurat_out
    assert ro.r("is.factor(seu_out$predicted.scnym)")[0]
    assert _col(ro, "levels(seu_out$predicted.scnym)") == sorted(python_result.obs["cell_type"].astype(str).unique())
    score = _num(ro, "seu_out$predicted.scnym.score")
    assert np.all((score >= 0) & (score <= 1))
    probs = np.asarray(ro.r('as.matrix(GetAssayData(seu_out, assay = "prediction.score.scnym", slot = "data"))'))
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs.max(axis=0), score, atol=1e-6)
    assert tuple(ro.r('dim(Embeddings(seu_out, "scnym"))')) == (100, 256)
    bridge = ro.r('Command(seu_out, "RunScNym.scnym")@params$r_bridge')
    assert list(bridge.rx2("backend")) == ["rpy2"] and list(bridge.rx2("converter")) == ["anndata2ri"]
    # the other metadata columns are untouched
    assert _col(ro, "colnames(seu_out[[]])") == _col(ro, "colnames(seu_q[[]])") + [
        "predicted.scnym",
        "predicted.scnym.score",
    ]
    assert ro.r("identical(seu_out[[]][colnames(seu_q[[]])], seu_q[[]])")[0]
    # real accuracy (measured 0.94 at 15 epochs)
    assert accuracy(_col(ro, "seu_out$predicted.scnym"), _col(ro, "seu_q$cell_type")) >= 0.85


def test_r_entry_point_and_python_api_agree(seurat_out, python_result):
    """Same data, same seed: RunScNym (through rpy2) and pybridge.scnym give identical labels."""
    ro = seurat_out
    assert _col(ro, "seu_out$predicted.scnym") == python_result.obs["scnym"].astype(str).tolist()
    np.testing.assert_allclose(
        _num(ro, "seu_out$predicted.scnym.score"), python_result.obs["scnym_confidence"].to_numpy(), atol=1e-6
    )
    emb = np.asarray(ro.r('Embeddings(seu_out, "scnym")'))
    np.testing.assert_allclose(emb, python_result.obsm["X_scnym"], atol=1e-5)


def test_sce_metadata_through_rpy2(seurat_out, python_result):
    ro = seurat_out
    ro.r(f'sce_out <- RunScNym(sce_q, sce_r, n_epochs = {EPOCHS}, device = "cpu", verbose = FALSE)')
    assert _col(ro, "sce_out$predicted.scnym") == python_result.obs["scnym"].astype(str).tolist()
    assert ro.r("is.factor(sce_out$predicted.scnym) && is.double(sce_out$predicted.scnym.score)")[0]
    assert tuple(ro.r('dim(reducedDim(sce_out, "SCNYM"))')) == (100, 256)
    probs = np.asarray(ro.r("metadata(sce_out)$pybridge$scnym$probabilities"))
    assert probs.shape == (100, 6)
    assert (
        _col(ro, "colnames(metadata(sce_out)$pybridge$scnym$probabilities)")
        == python_result.uns["scnym"]["classes"].tolist()
    )
    np.testing.assert_allclose(probs, python_result.obsm["scnym_probabilities"], atol=1e-6)
    # the object is otherwise identical
    assert ro.r(
        """local({x <- sce_out; x$predicted.scnym <- NULL; x$predicted.scnym.score <- NULL
        reducedDim(x, "SCNYM") <- NULL; metadata(x)$pybridge <- NULL; identical(x, sce_q)})"""
    )[0]


def test_r_never_starts_reticulate_here(seurat_out):
    ro = seurat_out
    assert not ro.r('isNamespaceLoaded("reticulate") && reticulate::py_available(initialize = FALSE)')[0]


def test_errors_cross_back_as_r_errors(r):
    from rpy2.rinterface_lib.embedded import RRuntimeError

    with pytest.raises(RRuntimeError, match="is not a column of the reference's meta.data"):
        r.r('RunScNym(seu_q, seu_r, labels = "nope", verbose = FALSE)')
    # raised in Python inside the callback, re-raised by R, seen here
    with pytest.raises(RRuntimeError, match="Unknown ScNymConfig option"):
        r.r("RunScNym(sce_q, sce_r, n_epoch = 2, verbose = FALSE)")
    msg = r.r(
        "tryCatch(RunScNym(sce_q, sce_r, n_epoch = 2, verbose = FALSE), "
        "pybridge_python_error = function(e) e$python_type)"
    )
    assert list(msg) == ["TypeError"]


def test_unregistered_bridge_is_a_clear_r_error(r):
    from rpy2.rinterface_lib.embedded import RRuntimeError

    import pybridge.r as pr

    r.r("options(pybridge.rpy2_callback = NULL)")
    try:
        with pytest.raises(RRuntimeError, match=r"pybridge.r.register\(\)"):
            r.r("RunScNym(sce_q, sce_r, verbose = FALSE)")
    finally:
        pr.register()
    assert r.r('is.function(getOption("pybridge.rpy2_callback"))')[0]


def test_exit_handler_unsets_the_callback_and_register_restores_it(r):
    import pybridge.r as pr

    pr._release_callbacks()  # what runs at interpreter exit
    try:
        assert r.r('is.null(getOption("pybridge.rpy2_callback"))')[0]
        assert pr._keepalive == []
    finally:
        pr.register()
    assert r.r('is.function(getOption("pybridge.rpy2_callback"))')[0]
    assert len(pr._keepalive) == 1
    assert r.r("ncol(RunScNym(sce_q, sce_r, n_epochs = 2, verbose = FALSE)) == ncol(sce_q)")[0]


def test_saved_model_and_h5ad_reference_through_rpy2(r, tmp_path, data_dir):
    path = tmp_path / "model"
    r.r(f'm <- TrainScNym(seu_r, path = "{path}", n_epochs = 5, device = "cpu", verbose = FALSE)')
    assert (path / "model.safetensors").exists()
    r.r(f'a <- RunScNym(sce_q, "{path}", verbose = FALSE); b <- RunScNym(seu_q, m, verbose = FALSE)')
    assert _col(r, "a$predicted.scnym") == _col(r, "b$predicted.scnym")
    # the model in Python gives the same labels
    import pybridge

    q = load("panc8_small")
    q = q[q.obs["batch"] == "indrop"].copy()
    res = pybridge.ScNym.load(path, device="cpu", verbose=False).predict(q)
    assert _col(r, "a$predicted.scnym") == list(map(str, res.labels))
    # an .h5ad path as reference
    h5 = data_dir / "panc8_small.h5ad"
    r.r(f'h <- RunScNym(sce_q, "{h5}", n_epochs = 2, device = "cpu", verbose = FALSE)')
    assert r.r('grepl("^h5ad: ", metadata(h)$pybridge$scnym$params$reference)')[0]


@pytest.fixture(scope="module")
def rds_files(r, tmp_path_factory):
    """A Seurat query with metadata columns of every common type, and a Seurat reference, as .rds."""
    d = tmp_path_factory.mktemp("rds")
    q, ref = d / "query.rds", d / "ref.rds"
    r.r(
        f"""
        qq <- seu_q
        qq$a_factor <- factor(rep(c("x", "y"), length.out = ncol(qq)), levels = c("y", "x", "z"))
        qq$a_string <- paste0("s", seq_len(ncol(qq)))
        qq$a_double <- seq_len(ncol(qq)) / 7
        qq$an_int <- c(NA_integer_, seq_len(ncol(qq) - 1L))
        qq$a_flag <- seq_len(ncol(qq)) %% 3 == 0
        saveRDS(qq, "{q}")
        saveRDS(seu_r, "{ref}")
        saveRDS(sce_q, "{d / "query_sce.rds"}")
        """
    )
    return d, q, ref


def test_read_rds_seurat_and_sce(rds_files, panc8):
    import pybridge.r as pr

    d, q, _ = rds_files
    a = pr.read_rds(q)
    expected = panc8[panc8.obs["batch"] == "indrop"]
    assert a.shape == expected.shape
    assert list(a.obs_names) == list(expected.obs_names) and list(a.var_names) == list(expected.var_names)
    np.testing.assert_allclose(a.X.toarray(), expected.X.toarray(), rtol=1e-6)
    for col in ("a_factor", "a_string", "a_double", "an_int", "a_flag", "cell_type", "tech"):
        assert col in a.obs
    assert list(a.obs["a_factor"].cat.categories) == ["y", "x", "z"]
    b = pr.read_rds(d / "query_sce.rds")
    np.testing.assert_allclose(b.X.toarray(), expected.X.toarray(), rtol=1e-6)
    assert b.obs["cell_type"].astype(str).tolist() == expected.obs["cell_type"].astype(str).tolist()


def _meta_equal_in_r(ro, before, after):
    return ro.r(
        f"""local({{
          a <- readRDS("{before}"); b <- readRDS("{after}")
          old <- a[[]]; new <- b[[]]
          c(all(colnames(old) %in% colnames(new)), identical(new[colnames(old)], old),
            identical(setdiff(colnames(new), colnames(old)), c("predicted.scnym", "predicted.scnym.score")))
        }})"""
    )


def test_rds_round_trip_keeps_every_metadata_column(r, rds_files):
    import pybridge.r as pr

    d, q, ref = rds_files
    out = d / "annotated.rds"
    res = pr.annotate_rds(q, ref, out, n_epochs=3, device="cpu", verbose=False)
    assert all(_meta_equal_in_r(r, q, out))
    assert _col(r, f'readRDS("{out}")$predicted.scnym') == list(map(str, res.labels))
    assert r.r(f'"pybridge.annotate_rds.scnym" %in% Command(readRDS("{out}"))')[0]


def test_cli_annotates_rds_and_keeps_metadata(r, rds_files, capsys):
    from pybridge.cli import main

    d, q, ref = rds_files
    out = d / "cli.rds"
    code = main(
        [
            "annotate",
            "--reference",
            str(ref),
            "--query",
            str(q),
            "--out",
            str(out),
            "--quiet",
            "--device",
            "cpu",
            "--set",
            "n_epochs=3",
        ]
    )
    assert code == 0
    assert all(_meta_equal_in_r(r, q, out))
    assert r.r(f'is.factor(readRDS("{out}")$predicted.scnym)')[0]
    assert r.r(f'"pybridge.write_result_rds.scnym" %in% Command(readRDS("{out}"))')[0]
    assert "mean confidence" in capsys.readouterr().out


@pytest.mark.slow
def test_process_exits_with_its_own_status_after_r_gc(tmp_path, data_dir):
    """The exit-time/GC GIL hazard: a process that ran RunScNym through rpy2, then R's gc, exits normally."""
    _rpy2_or_skip()
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            """
        import sys
        import rpy2.robjects as ro
        import pybridge.r
        pybridge.r.register()
        ro.r('''
          suppressPackageStartupMessages({library(pybridge); library(SeuratObject)})
          seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
          out <- RunScNym(subset(seu, tech == "indrop"), subset(seu, tech != "indrop"), n_epochs = 2,
                          device = "cpu", verbose = FALSE)
          rm(out); for (i in 1:5) invisible(gc())
        ''')
        sys.exit(7)
        """
        )
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 7, proc.stderr[-2000:]
