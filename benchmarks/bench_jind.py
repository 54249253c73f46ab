"""JIND (without alignment, aligned, JIND+) next to scNym on the reference -> query dev tasks.

    python -m benchmarks.bench_jind [--data ../shared/data] [--device cpu] [--threads 1]
                                    [--tasks panc8:indrop,zheng_train->test] [--skip-scnym]
                                    [--set gan_epochs=10 ...] [--out benchmarks/results_jind.md]

For every task one JIND model is trained with ``jind_plus=True`` and evaluated at
its three stages (``predict(stage=...)``): the prediction model alone ("JIND
no-align"), after the asymmetric alignment ("JIND") and after self-training
("JIND+"). scNym runs with the shared JIND-style rejection (``reject=True``) so
that the same three numbers exist for it.

Metrics follow the JIND paper: ``raw`` = accuracy of the labels before
rejection over all query cells, ``rej`` = fraction of query cells labelled
"Unassigned", ``eff`` = accuracy over the cells that were not rejected. Query
cells whose type is absent from the reference always count as wrong (as in
the JIND code); for tasks with such cells the rejected fraction of unseen and
of seen cells is reported too. Times are wall-clock seconds on this machine
with ``--threads`` torch threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import pybridge
from pybridge.models.jind import JIND

from .tasks import PANC8_TECHS, load_pair  # the suite's task list and loader

ROOT = Path(__file__).resolve().parents[1]

#: the suite's dev tasks this script runs (all but 5cl)
TASKS = [f"panc8:{t}" for t in PANC8_TECHS] + ["baron_mouse1->2", "cellbench_celseq2->dropseq", "zheng_train->test"]


def dev_tasks(data: Path) -> dict:
    """name -> zero-argument loader returning (reference, query)."""
    return {name: (lambda name=name: load_pair(data, name)) for name in TASKS}


def score(labels, raw_labels, truth, ref_classes) -> dict:
    """The paper's raw / rej / eff (unseen types count as wrong), plus rejection of seen vs unseen cells."""
    truth = np.asarray(truth, dtype=str)
    raw_labels = np.asarray(raw_labels, dtype=str)
    rejected = np.asarray(labels, dtype=str) == pybridge.rejection.UNASSIGNED
    kept = ~rejected
    seen = np.isin(truth, sorted(ref_classes))
    out = {
        "raw": float(np.mean(raw_labels == truth)),
        "rej": float(np.mean(rejected)),
        "eff": float(np.mean(raw_labels[kept] == truth[kept])) if kept.any() else float("nan"),
    }
    if (~seen).any():
        out["rej_seen"] = float(np.mean(rejected[seen]))
        out["rej_unseen"] = float(np.mean(rejected[~seen]))
    return out


def run(args) -> pd.DataFrame:
    tasks = dev_tasks(Path(args.data))
    names = args.tasks.split(",") if args.tasks else list(tasks)
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; choose from {list(tasks)}")
    opts = {}
    for item in args.set or []:
        k, v = item.split("=", 1)
        opts[k] = json.loads(v)
    rows = []
    for name in names:
        ref, q = tasks[name]()
        truth = q.obs["cell_type"].astype(str).to_numpy()
        classes = set(ref.obs["cell_type"].astype(str))
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            model = JIND(seed=seed, device=args.device, verbose=False, **{"jind_plus": True, **opts})
            model.fit(ref, query=q)
            fit_s = time.perf_counter() - t0
            tm = model.fit_info_["timings"]
            stage_time = {
                "base": tm["preprocess_s"] + tm["train_s"],
                "aligned": tm["preprocess_s"] + tm["train_s"] + tm.get("align_s", 0.0),
                "plus": fit_s,
            }
            labels = {"base": "JIND no-align", "aligned": "JIND", "plus": "JIND+"}
            for stage in model.stages_:
                t1 = time.perf_counter()
                res = model.predict(q, stage=stage)
                pred_s = time.perf_counter() - t1
                rows.append(
                    {
                        "task": name,
                        "method": labels[stage],
                        "seed": seed,
                        **score(res.labels, res.raw_labels, truth, classes),
                        "seconds": stage_time[stage] + pred_s,
                    }
                )
            al = model.fit_info_.get("alignment", {})
            rows[-1]["note"] = (
                f"GAN epoch {al.get('selected_epoch')}/{al.get('epochs_run')}, "
                f"{model.fit_info_['jind_plus'].get('n_pseudo_labelled')} pseudo-labels"
            )
            if not args.skip_scnym:
                t0 = time.perf_counter()
                res = pybridge.api.compute_scnym(q, ref, seed=seed, device=args.device, verbose=False, reject=True)
                rows.append(
                    {
                        "task": name,
                        "method": "scNym (reject=True)",
                        "seed": seed,
                        **score(res.labels, res.raw_labels, truth, classes),
                        "seconds": time.perf_counter() - t0,
                        "note": f"{res.params['training']['epochs_trained']} epochs",
                    }
                )
        print(pd.DataFrame([r for r in rows if r["task"] == name]).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame) -> str:
    cols = ["task", "method", "seed", "raw", "rej", "eff", "rej_seen", "rej_unseen", "seconds", "note"]
    cols = [c for c in cols if c in df]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append("" if np.isnan(v) else (f"{v:.1f}" if c == "seconds" else f"{v:.3f}"))
            else:
                cells.append("" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_jind",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--set", action="append", help="JIND option key=value (JSON values)")
    p.add_argument("--skip-scnym", action="store_true")
    p.add_argument("--csv", default=None)
    p.add_argument("--out", default=None, help="write the markdown table to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    df = run(args)
    mean = df.groupby("method", sort=False)[["raw", "rej", "eff", "seconds"]].mean()
    print("\n=== all tasks ===")
    print(df.to_string(index=False))
    print("\n=== mean over tasks ===")
    print(mean.to_string(float_format=lambda v: f"{v:.3f}"))
    if args.csv:
        df.to_csv(args.csv, index=False)
    if args.out:
        env = (
            f"pybridge {pybridge.__version__}, torch {torch.__version__}, device {args.device}, "
            f"{args.threads} CPU thread(s), {platform.processor() or platform.machine()}"
        )
        opts = f"; JIND options {args.set}" if args.set else ""
        text = (
            f"# JIND benchmark\n\nCommand: `python -m benchmarks.bench_jind {' '.join(sys.argv[1:])}`\n\n"
            f"Environment: {env}{opts}.\n\n{to_markdown(df)}\n\nMean over tasks:\n\n"
            + to_markdown(mean.reset_index().assign(task="all", seed="", note=""))
            + "\n"
        )
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
