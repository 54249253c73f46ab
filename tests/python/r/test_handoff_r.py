"""The anndata2ri handoff inside an R session that hosts Python (reticulate >= 1.31: the trixie lane).

With ``options(pybridge.converter = "anndata2ri")`` R/python.R leaves the SingleCellExperiment in the
environment ``options(pybridge.handoff = )`` and calls ``run_from_r_handoff()``, where rpy2, attached to the
R that runs reticulate, converts it with anndata2ri. With Debian bookworm's reticulate 1.28 that would abort
R with a GIL error, so R refuses it there and sends the sparse dgCMatrix instead (tests/testthat/test-python.R
checks that fallback); here the handoff itself runs, in a fresh Rscript: it must give the labels and scores of
the dgCMatrix path, on a Seurat 5 object with split counts and on a SingleCellExperiment, print no warning,
survive R's garbage collection and exit normally.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.r

SCRIPT = r"""
if (!all(vapply(c("pybridge", "SeuratObject", "SingleCellExperiment", "reticulate"), requireNamespace, NA,
                quietly = TRUE))) {
  cat("NOPKG\n"); quit(status = 0)
}
if (utils::packageVersion("reticulate") < "1.31") {
  cat("OLD_RETICULATE", as.character(utils::packageVersion("reticulate")), "\n"); quit(status = 0)
}
suppressPackageStartupMessages({library(SeuratObject); library(SingleCellExperiment); library(pybridge)})
seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
q0 <- subset(seu, tech == "indrop")
r <- subset(seu, tech != "indrop")
q <- q0
if (utils::packageVersion("SeuratObject") >= "5.0.0") {  # a Seurat 5 query, its counts in three layers
  suppressWarnings(q[["RNA"]] <- methods::as(q[["RNA"]], "Assay5"))  # ("changing from Assay to Assay5")
  q[["RNA"]] <- split(q[["RNA"]], f = rep(c("a", "b", "c"), length.out = ncol(q)))
  cat("LAYERS", Layers(q), "\n")
}
# (the second argument of GetAssayData() on an assay is `slot` in SeuratObject 4, `layer` in 5)
sce <- SingleCellExperiment(assays = list(counts = GetAssayData(q0[["RNA"]], "counts")),
                            colData = S4Vectors::DataFrame(q0[[]]))
opts <- list(n_epochs = 3, min_epochs = 1, n_hidden = 64, device = "cpu", verbose = FALSE)
run <- function(converter, x) {
  options(pybridge.converter = converter)
  do.call(RunScNym, c(list(x, r), opts))
}
cols <- c("predicted.scnym", "predicted.scnym.score")
sparse <- run("sparse", q)
handoff <- run("anndata2ri", q)
bridge <- Command(handoff, "RunScNym.scnym")@params$r_bridge
cat("BRIDGE", bridge$backend, bridge$converter, "\n")
cat("SPARSE_BRIDGE", Command(sparse, "RunScNym.scnym")@params$r_bridge$converter, "\n")
cat("SAME_SEURAT", identical(handoff[[]][cols], sparse[[]][cols]), "\n")
cat("SAME_ORDER", identical(colnames(handoff), colnames(q)), "\n")
sce_out <- run("anndata2ri", sce)
cat("SCE_CONVERTER", S4Vectors::metadata(sce_out)$pybridge$scnym$params$r_bridge$converter, "\n")
cat("SAME_SCE", identical(as.data.frame(colData(sce_out))[cols], sparse[[]][cols]), "\n")
cat("HANDOFF_EMPTY", length(ls(getOption("pybridge.handoff"))) == 0L, "\n")
rm(handoff, sce_out); for (i in 1:5) invisible(gc())
np <- reticulate::import("numpy"); x <- np$arange(5); rm(x, np); for (i in 1:5) invisible(gc())
cat("DONE\n")
"""


def test_anndata2ri_handoff_in_an_r_hosted_session(tmp_path):
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.skip("Rscript not available")
    for module in ("rpy2", "anndata2ri"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed in this Python (pybridge[r])")
    script = tmp_path / "handoff.R"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYBRIDGE_PYTHON=sys.executable, OMP_NUM_THREADS="1")
    proc = subprocess.run([rscript, str(script)], capture_output=True, text=True, env=env, timeout=600)
    out, err = proc.stdout, proc.stderr
    if "NOPKG" in out:
        pytest.skip("the R package pybridge (or SeuratObject, SingleCellExperiment, reticulate) is not installed")
    if "OLD_RETICULATE" in out:
        pytest.skip(
            f"reticulate {out.split()[1]} < 1.31 (Debian bookworm): rpy2 inside an R-hosted Python aborts R with "
            "a GIL error, so pybridge falls back to the dgCMatrix path there; the handoff runs in the trixie lane"
        )
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    assert "DONE" in out, err[-3000:]
    assert "BRIDGE reticulate anndata2ri" in out, out
    assert "SPARSE_BRIDGE sparse" in out, out
    assert "SAME_SEURAT TRUE" in out and "SAME_ORDER TRUE" in out, out
    assert "SCE_CONVERTER anndata2ri" in out and "SAME_SCE TRUE" in out, out
    assert "HANDOFF_EMPTY TRUE" in out, out
    # nothing about the bridge reaches the user: no R warning, no rpy2 notice
    assert "Warning" not in err and "Warning" not in out, err[-3000:]
    assert "R was initialized outside of rpy2" not in err, err[-3000:]
