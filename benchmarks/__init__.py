"""pybridge benchmark suite: pybridge's methods next to peer tools on the same tasks, genes and splits.

    python -m benchmarks [--quick] [--data DIR] [--tools ...] [--tasks ...] [--out DIR]
    python -m benchmarks scale [--sizes 10000,50000,200000] [--tools ...]
    python -m benchmarks report [--out DIR] [--results-md PAGE]
    python -m benchmarks.bench_scnym ...   # the per-method scripts (bench_*.py), each a module

Every (tool, task) runs in its own subprocess (``benchmarks.worker`` for Python
tools, ``Rscript benchmarks/peers_r.R`` for Seurat and SingleR), so wall time
and peak memory belong to that call alone and a per-call timeout can be
enforced. The harness (:mod:`benchmarks.harness`) scores the predictions
(:mod:`benchmarks.metrics`) and writes a CSV; :mod:`benchmarks.report` writes
``RESULTS.md`` and PNG plots; :mod:`benchmarks.cli` is the command that runs
one after the other. The tool table is :mod:`benchmarks.tools`, the task list
:mod:`benchmarks.tasks`; the per-method scripts (``bench_*.py``) share that
task list.
"""
