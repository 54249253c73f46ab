"""pybridge benchmark suite: pybridge's methods next to peer tools on the same tasks, genes and splits.

    python -m benchmarks [--quick] [--data DIR] [--tools ...] [--tasks ...] [--out DIR]
    python -m benchmarks scale [--sizes 10000,50000,200000] [--tools ...]

Every (tool, task) runs in its own subprocess (``benchmarks.worker`` for Python
tools, ``Rscript benchmarks/peers_r.R`` for Seurat and SingleR), so wall time
and peak memory belong to that call alone and a per-call timeout can be
enforced. The harness (:mod:`benchmarks.harness`) scores the predictions
(:mod:`benchmarks.metrics`) and writes a CSV, ``RESULTS.md`` and PNG plots
(:mod:`benchmarks.report`). The older per-method scripts (``bench_*.py``) stay
as they are; this package reuses their task definitions.
"""
