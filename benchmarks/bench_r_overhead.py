"""What does calling pybridge from R cost on top of the Python call?

Simulates a labelled reference and a ~10k-cell query (negative-binomial
counts, cell types with marker genes), then times scNym (few epochs, same seed,
CPU) on the same data:

* ``python``: ``pybridge.api.compute_scnym`` on AnnData (the baseline);
* ``R (reticulate)``: ``RunScNym`` in an ``Rscript`` process (R hosts Python),
  on a Seurat object and on a SingleCellExperiment;
* ``R (rpy2)``: ``pybridge::RunScNym`` called from this Python process through
  rpy2 (Python hosts R; objects cross with anndata2ri in the callback);
* ``R (reticulate), Seurat, torch on R's BLAS``: as the first R row, with
  ``options(pybridge.isolate_torch = FALSE)``: torch imported plainly, so its
  matrix products run in R's BLAS (what every R call did before pybridge
  imported torch with RTLD_DEEPBIND; see ``.load_torch_isolated`` in R/python.R).

Each R-side row reports the end-to-end time of the R call, the model's own
time inside it (``params$timings$total_s``, the same code the Python baseline
runs) and the difference: the bridge overhead (reading the object, handing
the counts to Python, building the AnnData, sending results back, writing them
into the object), in seconds and as a fraction of the R call. Every process
does a small warm-up call first, so the numbers exclude starting Python/torch.

    .venv/bin/python -m benchmarks.bench_r_overhead [--cells 10000] [--ref-cells 5000] [--epochs 2] [--repeats 2]

Writes the table to stdout and to benchmarks/results_r_overhead.md when
``--write`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]


def simulate(n_cells: int, n_genes: int, n_types: int, seed: int, prefix: str) -> ad.AnnData:
    """NB counts: per-gene base means (log-normal), 60 marker genes per type at 4x, log-normal library sizes."""
    rng = np.random.default_rng(seed)
    gene_rng = np.random.default_rng(12345)  # the same genes and type profiles for reference and query
    base = gene_rng.lognormal(mean=-1.0, sigma=1.2, size=n_genes)
    profiles = np.tile(base, (n_types, 1))
    for k in range(n_types):
        markers = gene_rng.choice(n_genes, 60, replace=False)
        profiles[k, markers] *= 4.0
    profiles /= profiles.sum(axis=1, keepdims=True)
    types = rng.integers(0, n_types, size=n_cells)
    lib = rng.lognormal(mean=np.log(2000), sigma=0.4, size=n_cells)
    mu = profiles[types] * lib[:, None]
    theta = 5.0  # NB dispersion
    counts = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)
    X = sp.csr_matrix(counts)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type_{t}" for t in types])}, index=[f"{prefix}{i}" for i in range(n_cells)]
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    return ad.AnnData(X=X, obs=obs, var=var)


R_SCRIPT = r"""
suppressPackageStartupMessages({library(pybridge); library(SeuratObject); library(SingleCellExperiment)})
args <- commandArgs(trailingOnly = TRUE)
dir <- args[[1]]; epochs <- as.integer(args[[2]]); repeats <- as.integer(args[[3]])
shared_blas <- length(args) > 3 && args[[4]] == "shared-blas"  # torch imported plainly: its sgemm_ goes to R's BLAS
if (shared_blas) options(pybridge.isolate_torch = FALSE)
py_labels <- readLines(file.path(dir, "python_labels.txt"))
ref <- readRDS(file.path(dir, "ref_seurat.rds")); q <- readRDS(file.path(dir, "query_seurat.rds"))
sref <- readRDS(file.path(dir, "ref_sce.rds")); sq <- readRDS(file.path(dir, "query_sce.rds"))
# warm-up: start Python, import torch, first kernels
invisible(RunScNym(q[, 1:200], ref[, 1:400], n_epochs = 1, device = "cpu", verbose = FALSE))
one <- function(label, query, reference) {
  for (i in seq_len(repeats)) {
    t0 <- proc.time()[["elapsed"]]
    out <- RunScNym(query, reference, n_epochs = epochs, device = "cpu", verbose = FALSE)
    total <- proc.time()[["elapsed"]] - t0
    p <- if (inherits(out, "Seurat")) Command(out, "RunScNym.scnym")@params else metadata(out)$pybridge$scnym$params
    cat(jsonlite::toJSON(list(label = label, total = total, model = p$timings$total_s, bridge = p$r_bridge,
                              same = identical(as.character(out$predicted.scnym), py_labels)),
                         auto_unbox = TRUE), "\n")
  }
}
if (shared_blas) {
  one("R (reticulate), Seurat, torch on R's BLAS", q, ref)
} else {
  one("R (reticulate), Seurat", q, ref)
  one("R (reticulate), SCE", sq, sref)
  bridge_only(q, ref, "R (reticulate), Seurat")
  bridge_only(sq, sref, "R (reticulate), SCE")
}
"""

# The bridge alone, without a model: what RunScNym does around the model (read the
# objects, hand them to Python, build the AnnData, send a result of the real shape
# back, write it into the object), repeated; much less noisy than a difference of
# two training runs.
R_BRIDGE_ONLY = r"""
bridge_only <- function(query, reference, label, n = 5L) {
  for (i in seq_len(n)) {
    t0 <- proc.time()[["elapsed"]]
    qp <- pybridge:::.extract(query, what = "query")
    rp <- pybridge:::.extract(reference, require = "cell_type", what = "reference")
    t1 <- proc.time()[["elapsed"]]
    out <- pybridge:::.call_python(list(task = "echo", method = "echo", labels_key = "cell_type", options = list()),
                                   query = qp, reference = rp, verbose = FALSE)
    t2 <- proc.time()[["elapsed"]]
    res <- pybridge:::.normalize_result(out)
    obj <- pybridge:::.store_result(query, res, name = "echo", method = "echo", fn = "Bench", assay = qp$assay,
                                    cells = qp$cells, params = list(), call_string = "bench")
    t3 <- proc.time()[["elapsed"]]
    cat(jsonlite::toJSON(list(label = label, kind = "bridge", total = t3 - t0, extract = t1 - t0,
                              call = t2 - t1, python = out$python_s, store = t3 - t2), auto_unbox = TRUE), "\n")
  }
}
"""


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_r_overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=10000, help="query cells")
    ap.add_argument("--ref-cells", type=int, default=5000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="also write benchmarks/results_r_overhead.md")
    args = ap.parse_args()

    import torch

    import pybridge
    import pybridge.r as pr

    threads = torch.get_num_threads()
    ref = simulate(args.ref_cells, args.genes, 6, seed=1, prefix="r")
    query = simulate(args.cells, args.genes, 6, seed=2, prefix="q")
    nnz = query.X.nnz
    print(
        f"simulated: query {query.n_obs} x {query.n_vars} ({nnz / 1e6:.1f}M non-zeros), "
        f"reference {ref.n_obs} cells; scNym {args.epochs} epochs, CPU, {threads} torch threads",
        flush=True,
    )

    rows = []
    # ---- Python baseline
    pybridge.api.compute_scnym(query[:200].copy(), ref[:400].copy(), n_epochs=1, device="cpu", verbose=False)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = pybridge.api.compute_scnym(query, ref, n_epochs=args.epochs, seed=0, device="cpu", verbose=False)
        total = time.perf_counter() - t0
        rows.append(
            {
                "label": "Python (pybridge.api.compute_scnym)",
                "total": total,
                "model": res.params["timings"]["total_s"],
                "bridge": {},
            }
        )
        print(f"  python: {total:.2f}s", flush=True)
    py_labels = np.asarray(res.labels, dtype=str)
    same_r = {}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ---- R objects, written through rpy2 + anndata2ri (this also starts R in this process)
        import anndata2ri
        import rpy2.robjects as ro
        from rpy2.robjects.conversion import localconverter

        pr.register()
        for name, a in (("ref", ref), ("query", query)):
            with localconverter(anndata2ri.converter):
                ro.globalenv["tmp_sce"] = a
            ro.r(f"""
                suppressPackageStartupMessages({{library(SeuratObject); library(SingleCellExperiment)}})
                counts <- as(SummarizedExperiment::assay(tmp_sce, "X"), "CsparseMatrix")
                sce <- SingleCellExperiment(assays = list(counts = counts), colData = colData(tmp_sce))
                saveRDS(sce, "{tmp / f"{name}_sce.rds"}", compress = FALSE)
                saveRDS(CreateSeuratObject(counts = counts, meta.data = as.data.frame(colData(tmp_sce))),
                        "{tmp / f"{name}_seurat.rds"}", compress = FALSE)
                rm(tmp_sce, sce, counts); invisible(gc())
            """)

        # ---- R hosts Python (reticulate), in its own process
        # (second process: torch imported without isolation, as before pybridge loaded it with RTLD_DEEPBIND)
        script = tmp / "bench.R"
        script.write_text(R_BRIDGE_ONLY + R_SCRIPT)
        (tmp / "python_labels.txt").write_text("\n".join(py_labels) + "\n")
        env = dict(os.environ, PYBRIDGE_PYTHON=sys.executable)
        bridge_rows = []
        for mode in ("isolated", "shared-blas"):
            proc = subprocess.run(
                ["Rscript", str(script), str(tmp), str(args.epochs), str(args.repeats), mode],
                capture_output=True,
                text=True,
                env=env,
            )
            if proc.returncode != 0:
                raise SystemExit(f"Rscript failed:\n{proc.stderr[-3000:]}")
            for line in proc.stdout.splitlines():
                if line.strip().startswith("{"):
                    row = json.loads(line)
                    if row.get("kind") == "bridge":
                        bridge_rows.append(row)
                        continue
                    rows.append(row)
                    same_r[row["label"]] = bool(row.get("same"))
                    print(f"  {row['label']}: {row['total']:.2f}s", flush=True)

        # ---- Python hosts R (rpy2): the R entry point from this process
        ro.r(f"""
            suppressPackageStartupMessages(library(pybridge))
            bq <- readRDS("{tmp / "query_seurat.rds"}"); br <- readRDS("{tmp / "ref_seurat.rds"}")
            invisible(RunScNym(bq[, 1:200], br[, 1:400], n_epochs = 1, device = "cpu", verbose = FALSE))
        """)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ro.r(f'bout <- RunScNym(bq, br, n_epochs = {args.epochs}, device = "cpu", verbose = FALSE)')
            total = time.perf_counter() - t0
            p = ro.r('Command(bout, "RunScNym.scnym")@params')
            model = float(p.rx2("timings").rx2("total_s")[0])
            bridge = {k: float(p.rx2("r_bridge").rx2(k)[0]) for k in ("extract_s", "build_s", "call_s", "python_s")}
            rows.append(
                {"label": "R (rpy2 callback, anndata2ri), Seurat", "total": total, "model": model, "bridge": bridge}
            )
            print(f"  rpy2: {total:.2f}s", flush=True)
        same_r["R (rpy2 callback, anndata2ri), Seurat"] = (
            list(ro.r("as.character(bout$predicted.scnym)")) == py_labels.tolist()
        )
        ro.r(R_BRIDGE_ONLY)
        for _ in range(5):
            t0 = time.perf_counter()
            ro.r('invisible(capture.output(bridge_only(bq, br, "rpy2", n = 1L)))')
            bridge_rows.append(
                {"label": "R (rpy2 callback, anndata2ri), Seurat", "total": time.perf_counter() - t0, "printed": True}
            )

    # ---- table: best of the repeats per row
    df = pd.DataFrame(rows)
    best = df.loc[df.groupby("label", sort=False)["total"].idxmin()].reset_index(drop=True)
    py_total = best.loc[best["label"].str.startswith("Python"), "total"].iloc[0]
    lines = [
        f"scNym, {args.epochs} epochs, simulated query {args.cells} cells x {args.genes} genes "
        f"({nnz / 1e6:.1f}M non-zeros), reference {args.ref_cells} cells; "
        f"CPU ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {threads} torch threads); best of {args.repeats}; wall-clock seconds; "
        f"load average {os.getloadavg()[0]:.1f} at the end (this run's own calls use about 2).",
        "",
        "| entry point | end to end (s) | model (s) | overhead (s) | overhead / end to end | vs Python call |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in best.iterrows():
        overhead = r["total"] - r["model"]
        lines.append(
            f"| {r['label']} | {r['total']:.2f} | {r['model']:.2f} | {overhead:.2f} | "
            f"{100 * overhead / r['total']:.1f}% | {r['total'] - py_total:+.2f} |"
        )
    lines += [
        "",
        "Breakdown of the R calls (seconds; from the call's logged `r_bridge` timings):",
        "",
        "| entry point | extract in R | build payload | call into Python | of which in Python |",
        "|---|---:|---:|---:|---:|",
    ]
    for _, r in best.iterrows():
        b = r["bridge"] or {}
        if b:
            lines.append(
                f"| {r['label']} | {b.get('extract_s', float('nan')):.2f} | {b.get('build_s', float('nan')):.2f} | "
                f"{b.get('call_s', float('nan')):.2f} | {b.get('python_s', float('nan')):.2f} |"
            )
    lines += [
        "",
        "Labels identical to the Python call's (same seed): "
        + "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in same_r.items())
        + ".",
        "",
        "The bridge alone (no model; best of 5): reading the objects in R, handing them to Python, building "
        "the AnnData, returning a result of the real shape (labels, scores, 6-class probabilities, "
        "256-d embedding) and writing it into the object.",
        "",
        "| entry point | bridge total (s) | share of the Python call's time |",
        "|---|---:|---:|",
    ]
    bdf = pd.DataFrame(bridge_rows)
    for label, g in bdf.groupby("label", sort=False):
        t = float(g["total"].min())
        lines.append(f"| {label} | {t:.2f} | {100 * t / py_total:.1f}% |")
    text = "\n".join(lines)
    print()
    print(text)
    if args.write:
        out = ROOT / "benchmarks" / "results_r_overhead.md"
        intro = (
            "# R entry point overhead\n\nMade by `python -m benchmarks.bench_r_overhead --write`.\n\n"
            "When R hosts Python, R's own libblas comes first in the symbol search order, so a plainly imported "
            "torch runs its matrix products in R's BLAS (Debian: OpenBLAS, whose threads then compete with "
            "torch's OpenMP threads). pybridge's R package therefore imports torch with RTLD_DEEPBIND, which "
            "keeps it on its own MKL; the row 'torch on R's BLAS' turns that off "
            "(`options(pybridge.isolate_torch = FALSE)`) to show what it saves.\n\n"
        )
        out.write_text(intro + text + "\n")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
