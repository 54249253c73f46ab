"""Run one tool on one prepared task in this process and write its predictions.

    python -m benchmarks.worker TOOL TASK_DIR OUT_DIR [--opts JSON] [--seed 0] [--device cpu] [--threads 2]

Writes ``OUT_DIR/pred.csv`` (one row per query cell, in order) with the columns
the tool produces among ``label`` (after rejection; ``Unassigned`` = rejected),
``raw_label`` (before rejection), ``confidence`` (a probability-like score in [0, 1]
used for ECE; NaN where the tool has none), ``score`` (any score ranking how sure
the tool is, used for the unseen-type AUROC), ``rejected`` (0/1) and ``cluster``;
and ``OUT_DIR/meta.json`` with ``seconds`` (the tool call alone: no interpreter
start, no file reading), ``rss_before_mb`` (resident memory before the call) and
tool notes. The harness measures the whole process's peak memory.

pybridge's methods all run through one path: the tool's method
(:data:`benchmarks.tools.PYBRIDGE_METHODS`) is looked up in pybridge's method
registry and called as ``compute(query, reference, **options)``; which columns
its result gives follows from the registry record (:func:`prediction_table`).

Top-level imports are light on purpose: this module also runs in the separate
scvi-tools environment, which has no pybridge.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from .tools import PYBRIDGE_METHODS, QUERY_ONLY

UNASSIGNED = "Unassigned"


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def read_side(task_dir: Path, side: str):
    import anndata as ad

    return ad.read_h5ad(task_dir / f"{side}.h5ad")


# ---------------------------------------------------------------- pybridge methods
def _method(name: str, threads: int):
    """The registry record of pybridge method ``name`` (importing pybridge registers its methods)."""
    import torch

    torch.set_num_threads(max(1, threads))
    import pybridge  # noqa: F401
    from pybridge.models._registry import get_method

    return get_method(name)


def run_pybridge(method: str, ref, query, opts, seed, device, threads):
    """Any registered method through its one calling convention, ``compute(query, reference, **options)``."""
    info = _method(method, threads)
    if info.reference == "none":  # unsupervised: no reference, no labels
        ref, kw = None, {}
    else:
        kw = {"labels_key": "cell_type"}
    t0 = time.perf_counter()
    res = info.compute(query, ref, **kw, seed=seed, device=device, verbose=False, **opts)
    secs = time.perf_counter() - t0
    out, notes = prediction_table(info, res)
    return out, secs, notes


def prediction_table(info, res) -> tuple[pd.DataFrame, dict]:
    """``pred.csv``'s columns and the notes for a pybridge result, chosen by what the registry says it holds.

    * annotation: ``label`` / ``raw_label`` (after / before rejection), ``confidence``, ``rejected``, ``score``;
    * clustering that maps types with its own flagging (ItClust's ``raw_cell_types``): scored like an annotator
      too (the mapped type after / before flagging; flagged = rejected; confidence = the per-cell
      ``cell_score`` where there is one), then ``cluster``;
    * other clustering: ``cluster``, plus ``raw_label`` = the mapped type where the method maps types.
    """
    if info.kind == "annotation":
        out = pd.DataFrame(
            {
                "label": np.asarray(res.labels, dtype=str),
                "raw_label": np.asarray(res.raw_labels, dtype=str),
                "confidence": np.asarray(res.confidence, dtype=float),
                "rejected": res.rejected.astype(int),
            }
        )
        out["score"] = out["confidence"]
        notes = {"rejection": bool(res.rejection)}
        tr = res.params.get("training", {}) if isinstance(res.params, dict) else {}
        for k in ("epochs_trained", "best_epoch"):
            if isinstance(tr, dict) and k in tr:
                notes[k] = tr[k]
        if "stage" in res.params:
            notes["stage"] = res.params["stage"]
        return out, notes
    cols = {}
    flagged_types = info.maps_types and "raw_cell_types" in info.extra_fields
    if flagged_types:
        lab = np.asarray(res.cell_types, dtype=str)
        cell_score = getattr(res, "cell_score", None) if "cell_score" in info.extra_fields else None
        conf = np.asarray(cell_score if cell_score is not None else res.confidence, dtype=float)
        cols.update(
            label=lab,
            raw_label=np.asarray(res.raw_cell_types, dtype=str),
            confidence=conf,
            score=conf,
            rejected=(lab == UNASSIGNED).astype(int),
        )
    cols["cluster"] = np.asarray(res.clusters).astype(str)
    if info.maps_types and not flagged_types and res.cell_types is not None:
        cols["raw_label"] = np.asarray(res.cell_types, dtype=str)
    out = pd.DataFrame(cols)
    notes = {"n_clusters": int(len(set(out["cluster"])))}
    if "theta" in res.params:  # NMF transfer: the theta its kernel-target alignment chose
        notes["theta"] = res.params["theta"]
    return out, notes


# ---------------------------------------------------------------- dispatch
def run(tool: str, task_dir: Path, opts: dict, seed: int, device: str, threads: int):
    from . import peers

    task = json.loads((task_dir / "task.json").read_text())
    query = read_side(task_dir, "query")
    query_only = tool in QUERY_ONLY  # cluster the query alone
    ref = read_side(task_dir, "ref") if task["kind"] == "transfer" and not query_only else None
    before = rss_mb()
    if tool in PYBRIDGE_METHODS:
        out, secs, notes = run_pybridge(PYBRIDGE_METHODS[tool], ref, query, opts, seed, device, threads)
    elif tool in peers.PY_PEERS:
        out, secs, notes = peers.PY_PEERS[tool](ref, query, opts, seed, threads)
    else:
        raise ValueError(f"worker cannot run tool {tool!r}")
    if len(out) != query.n_obs:
        raise RuntimeError(f"{tool} returned {len(out)} rows for {query.n_obs} cells")
    return out, secs, notes, before


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.worker", description="run one benchmark tool on one prepared task"
    )
    p.add_argument("tool")
    p.add_argument("task_dir")
    p.add_argument("out_dir")
    p.add_argument("--opts", default="{}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import warnings

    warnings.filterwarnings("ignore")
    try:
        out, secs, notes, before = run(a.tool, Path(a.task_dir), json.loads(a.opts), a.seed, a.device, a.threads)
    except Exception as err:  # recorded by the harness as an error row
        (out_dir / "error.txt").write_text(f"{type(err).__name__}: {err}\n\n{traceback.format_exc()}")
        print(traceback.format_exc(), file=sys.stderr)
        return 1
    out.to_csv(out_dir / "pred.csv", index=False)
    meta = {"seconds": secs, "rss_before_mb": before, "notes": notes, "device": a.device, "pid": os.getpid()}
    if a.device.startswith("cuda"):
        import torch

        meta["device_name"] = torch.cuda.get_device_name(0)
        meta["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    (out_dir / "meta.json").write_text(json.dumps(meta, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
