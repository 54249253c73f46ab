"""An R interrupt (Ctrl+C / SIGINT) during training, in an R session that hosts Python through reticulate.

Rscript runs RunScNym on a synthetic set large enough to train for minutes; once the progress bar shows,
the test sends SIGINT. Measured behaviour (reticulate 1.28, Debian bookworm): the signal reaches Python as
KeyboardInterrupt within a second, pybridge's bridge lets it through (it only turns ``Exception`` into R
errors), R raises an ``interrupt`` condition that the script's ``tryCatch(interrupt = )`` catches, the
caller's object is identical to before, and the session goes on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

SCRIPT = r"""
if (!requireNamespace("pybridge", quietly = TRUE) || !requireNamespace("SingleCellExperiment", quietly = TRUE)) {
  cat("NOPKG\n"); quit(status = 0)
}
suppressPackageStartupMessages({library(SingleCellExperiment); library(pybridge)})
set.seed(1)
make <- function(n, prefix) {
  lab <- rep(c("A", "B", "C"), length.out = n)
  mu <- matrix(2, 300, 3); for (t in 1:3) mu[(t - 1) * 20 + 1:20, t] <- 12
  m <- matrix(rpois(300 * n, mu[, match(lab, c("A", "B", "C"))]), 300, n,
              dimnames = list(paste0("G", 1:300), paste0(prefix, 1:n)))
  SingleCellExperiment(assays = list(counts = as(m, "CsparseMatrix")), colData = S4Vectors::DataFrame(cell_type = lab))
}
q <- make(1500, "q"); r <- make(1500, "r")
before <- q
res <- tryCatch(RunScNym(q, r, n_epochs = 2000L, min_epochs = 2000L, patience = 2000L, device = "cpu", verbose = TRUE),
                interrupt = function(e) { cat("\nINTERRUPTED\n"); NULL })
cat("UNCHANGED", identical(q, before), "RESULT_NULL", is.null(res), "\n")
cat("ALIVE", sum(1:10), "\n")
"""


@pytest.mark.r
def test_sigint_during_training_leaves_r_alive_and_the_object_unchanged(tmp_path):
    rscript = shutil.which("Rscript")
    if rscript is None:
        pytest.skip("Rscript not available")
    script = tmp_path / "interrupt.R"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    env.setdefault("PYBRIDGE_PYTHON", sys.executable)
    proc = subprocess.Popen(
        [rscript, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True)
    reader.start()
    t0, sent = time.time(), None
    try:
        while proc.poll() is None and time.time() - t0 < 240:
            text = "".join(chunks)
            if "NOPKG" in text:
                break
            if sent is None and "scNym:" in text:  # the training loop's progress bar: training has started
                time.sleep(2)
                proc.send_signal(signal.SIGINT)
                sent = time.time()
            if sent is not None and time.time() - sent > 60:
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
    text = "".join(chunks)
    if "NOPKG" in text:
        pytest.skip("the R package pybridge (or SingleCellExperiment) is not installed")
    assert sent is not None, f"training never started:\n{text[-3000:]}"
    assert proc.returncode == 0, text[-3000:]
    assert "INTERRUPTED" in text, text[-3000:]
    assert "UNCHANGED TRUE RESULT_NULL TRUE" in text, text[-3000:]
    assert "ALIVE 55" in text, text[-3000:]


@pytest.mark.r
def test_keyboard_interrupt_in_python_hosted_r_is_an_r_interrupt_and_changes_nothing(r_session, monkeypatch):
    """Python hosts R (rpy2): a KeyboardInterrupt in the training loop reaches R as an ``interrupt`` condition
    (class ``pybridge_interrupted``), not as a crash or an "internal" error; R's object is unchanged."""
    from input_matrix_helpers import interrupt_training

    import pybridge

    interrupt_training(monkeypatch, [pybridge.ScNym.__module__])
    ro = r_session
    ro.r("""
      local({
        set.seed(1)
        m <- matrix(as.numeric(rpois(80 * 48, 3)), 80, 48, dimnames = list(paste0("G", 1:80), paste0("c", 1:48)))
        q <- SingleCellExperiment::SingleCellExperiment(assays = list(counts = as(m, "CsparseMatrix")),
               colData = S4Vectors::DataFrame(cell_type = rep(c("A", "B", "C"), 16)))
        assign("pb_intr_q", q, envir = globalenv())
        assign("pb_intr_before", q, envir = globalenv())
      })
    """)
    got = ro.r("""
      tryCatch(pybridge::RunScNym(pb_intr_q, pb_intr_q, n_epochs = 3, device = "cpu", verbose = FALSE),
               interrupt = function(e) paste(c("INTERRUPT", class(e)[1], conditionMessage(e)), collapse = "|"))
    """)[0]
    assert got.startswith("INTERRUPT|pybridge_interrupted|Interrupted in Python"), got
    assert ro.r("identical(pb_intr_q, pb_intr_before)")[0]
    ro.r("rm(pb_intr_q, pb_intr_before, envir = globalenv())")
