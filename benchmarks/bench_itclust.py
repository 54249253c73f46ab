"""ItClust on the reference -> query dev tasks, next to scNym and JIND; plus "source without some types".

    python -m benchmarks.bench_itclust [--data ../shared/data] [--device cpu] [--tasks baron,panc8:indrop]
                                       [--peers scnym,jind | --peers none] [--set min_genes=10 ...]
                                       [--no-removal] [--out benchmarks/results_itclust.md]
                                       [--resume /tmp/itclust_bench]

With --resume PREFIX every measured row is appended to PREFIX_transfer.csv /
PREFIX_removal.csv at once, and rows already there are not measured again (the
peers can take many minutes per task on a busy CPU).

Transfer table, one row per task and tool:
  acc        accuracy of the mapped cell type on query cells whose type is in the reference
             (ItClust: the cluster's source type before flagging, as the paper scores it;
             peers: the raw label before rejection)
  ARI        adjusted Rand index of the clusters (peers: of their labels) against the truth, all cells
  flag_seen / flag_unseen
             ItClust: share of cells in clusters flagged as possible new types (confidence below
             min_cluster_confidence); peers: share rejected ("Unassigned")
  clusters   ItClust clusters with cells / ItClust target-distribution updates
  trained    ItClust: query cells passing min_genes (trained on) / all query cells (all are assigned)
  seconds    wall time of the whole compute call (preprocessing + training + prediction)

Removal table: one reference type (or several) is removed from the source and we follow
the target cells of that type: the share flagged, their mean cluster confidence, and the
cluster most of them end in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import adjusted_rand_score

import pybridge  # noqa: F401 (importing pybridge registers its methods)
from pybridge.models._registry import get_method, methods

from .tasks import PAIRS, PANC8_TECHS  # the suite's task list

ROOT = Path(__file__).resolve().parents[1]

#: removal experiments: task -> types removed from the reference
REMOVALS = [
    ("baron_mouse1->2", ["endothelial"]),
    ("baron_mouse1->2", ["delta"]),
    ("baron_mouse1->2", ["ductal"]),
    ("baron_mouse1->2", ["alpha", "beta", "gamma", "delta"]),
    ("panc8:smartseq2", ["ductal"]),
    ("panc8:celseq2", ["acinar"]),
]


def load_task(data: Path, name: str):
    if name.startswith("panc8:"):
        tech = name.split(":", 1)[1]
        a = ad.read_h5ad(data / "panc8_small.h5ad")
        m = (a.obs["batch"] == tech).to_numpy()
        return a[~m].copy(), a[m].copy()
    ref, qry = PAIRS[name]
    return ad.read_h5ad(data / f"{ref}.h5ad"), ad.read_h5ad(data / f"{qry}.h5ad")


def all_tasks() -> list[str]:
    return [f"panc8:{t}" for t in PANC8_TECHS] + list(PAIRS)


def run_itclust(ref, q, device, opts):
    t0 = time.perf_counter()
    res = get_method("itclust").compute(q, ref, seed=0, device=device, verbose=False, **opts)
    return res, time.perf_counter() - t0


class Store:
    """Rows measured so far; appended to a CSV as they come when ``path`` is given."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.rows = pd.read_csv(self.path).to_dict("records") if self.path and self.path.exists() else []

    def done(self, **key) -> bool:
        return any(all(str(r.get(k)) == str(v) for k, v in key.items()) for r in self.rows)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self.path:
            pd.DataFrame([row]).to_csv(self.path, mode="a", header=not self.path.exists(), index=False)
        print(_fmt(pd.DataFrame([row])), flush=True)


def transfer_rows(args, opts) -> list[dict]:
    data = Path(args.data)
    peers = [] if args.peers == "none" else [p for p in args.peers.split(",") if p in methods("annotation")]
    store = Store(f"{args.resume}_transfer.csv" if args.resume else None)
    for name in args.tasks.split(",") if args.tasks else all_tasks():
        todo = [t for t in ["ItClust", *peers] if not store.done(task=name, tool=t)]
        if not todo:
            continue
        ref, q = load_task(data, name)
        truth = q.obs["cell_type"].astype(str).to_numpy()
        seen = np.isin(truth, ref.obs["cell_type"].astype(str).unique())
        if "ItClust" in todo:
            _itclust_row(store, name, ref, q, truth, seen, args, opts)
        for peer in [p for p in peers if p in todo]:
            t0 = time.perf_counter()
            pres = get_method(peer).compute(q, ref, seed=0, device=args.device, verbose=False)
            dt = time.perf_counter() - t0
            raw = np.asarray(pres.raw_labels, dtype=str)
            store.add(
                {
                    "task": name,
                    "tool": peer,
                    "acc": float(np.mean(raw[seen] == truth[seen])),
                    "ARI": adjusted_rand_score(truth, raw),
                    "flag_seen": float(pres.rejected[seen].mean()),
                    "flag_unseen": float(pres.rejected[~seen].mean()) if (~seen).any() else np.nan,
                    "clusters": "",
                    "seconds": dt,
                }
            )
    return store.rows


def _itclust_row(store, name, ref, q, truth, seen, args, opts):
    res, dt = run_itclust(ref, q, args.device, opts)
    tr = res.params["training"]
    store.add(
        {
            "task": name,
            "tool": "ItClust",
            "acc": float(np.mean(res.raw_cell_types[seen] == truth[seen])),
            "ARI": adjusted_rand_score(truth, res.clusters),
            "flag_seen": float(res.flagged[seen].mean()),
            "flag_unseen": float(res.flagged[~seen].mean()) if (~seen).any() else np.nan,
            "clusters": f"{len(set(res.clusters))}/{tr['target']['n_updates']}",
            "trained": f"{tr['n_query_cells_trained']}/{q.n_obs}",
            "seconds": dt,
        }
    )


def removal_rows(args, opts) -> list[dict]:
    data = Path(args.data)
    store = Store(f"{args.resume}_removal.csv" if args.resume else None)
    for name, removed in REMOVALS:
        if store.done(task=name, removed="+".join(removed)):
            continue
        ref, q = load_task(data, name)
        ref = ref[~ref.obs["cell_type"].astype(str).isin(removed)].copy()
        truth = q.obs["cell_type"].astype(str).to_numpy()
        new = np.isin(truth, removed)
        res, dt = run_itclust(ref, q, args.device, opts)
        table = pd.DataFrame(res.params["clusters"]).set_index("cluster")
        top = pd.Series(res.clusters[new]).value_counts()
        where = ", ".join(
            f"{c} ({table.loc[c, 'cell_type']}, conf {table.loc[c, 'confidence']:.2f}): {n}"
            for c, n in top.head(2).items()
        )
        store.add(
            {
                "task": name,
                "removed": "+".join(removed),
                "n_new": int(new.sum()),
                "flag_new": float(res.flagged[new].mean()),
                "flag_other": float(res.flagged[~new].mean()),
                "conf_new": float(res.confidence[new].mean()),
                "conf_other": float(res.confidence[~new].mean()),
                "acc_other": float(np.mean(res.raw_cell_types[~new] == truth[~new])),
                "ARI": adjusted_rand_score(truth, res.clusters),
                "new cells end in (cluster, type, confidence): cells": where,
                "seconds": dt,
            }
        )
    return store.rows


def _fmt(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            cells.append(
                f"{v:.3f}" if isinstance(v, float) and np.isfinite(v) else ("" if isinstance(v, float) else str(v))
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_itclust",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    p.add_argument(
        "--peers", default="scnym,jind", help="registered annotation methods to run next to ItClust, or 'none'"
    )
    p.add_argument("--set", action="append", help="ItClust option key=value (JSON values)")
    p.add_argument("--no-removal", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=None, help="write the tables as markdown here")
    p.add_argument("--resume", default=None, help="path prefix of CSV files that keep (and skip) measured rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    opts = {}
    for item in args.set or []:
        k, v = item.split("=", 1)
        opts[k] = json.loads(v) if v not in ("true", "false") else v == "true"
    transfer = pd.DataFrame(transfer_rows(args, opts))
    print("\n=== transfer ===\n" + _fmt(transfer))
    mean = transfer.groupby("tool")[["acc", "ARI", "seconds"]].mean()
    print("\n=== mean over tasks ===\n" + mean.to_string(float_format=lambda v: f"{v:.3f}"))
    removal = None
    if not args.no_removal:
        removal = pd.DataFrame(removal_rows(args, opts))
        print("\n=== source without some types (ItClust) ===\n" + _fmt(removal))
    if args.out:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            commit = "?"
        head = (
            f"Measured with `python -m benchmarks.bench_itclust {' '.join(sys.argv[1:])}` on "
            f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, torch threads "
            f"{args.threads}, device {args.device}), commit {commit}, seed 0, ItClust options "
            f"{opts or 'default'}. Wall times are on a shared machine and only indicative."
        )
        parts = [
            "# ItClust benchmark",
            "",
            head,
            "",
            "## Transfer",
            "",
            _md(transfer),
            "",
            "Mean over tasks:",
            "",
            _md(mean.reset_index()),
        ]
        if removal is not None:
            parts += ["", "## Source without some types (ItClust)", "", _md(removal)]
        Path(args.out).write_text("\n".join(parts) + "\n")
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
