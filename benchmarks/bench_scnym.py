"""scNym on the reference -> query dev tasks, next to a logistic-regression baseline.

    python -m benchmarks.bench_scnym [--data ../shared/data] [--device cpu] [--tasks panc8:indrop,zheng]
                                     [--set discovery=false ...] [--csv out.csv]
    python -m benchmarks.bench_scnym --tasks unseen --set reject=true --both-scores [--set discovery=false]
    python -m benchmarks.bench_scnym --tasks validation --seeds 3 [--first-seed 3]
    python -m benchmarks.bench_scnym --tasks panc8:celseq,panc8:indrop --domain-key batch  # multi-domain

'validation' is a second set of six tasks (other directions and plates of the same
datasets) that no setting was chosen on: use it to check that an option that wins
on the dev tasks is not just fitted to them.

Prints one row per task: accuracy and macro-F1 on query cells whose type is in
the reference (raw labels, before rejection), the rejected fraction of those
cells, the rejected fraction of cells of unseen types, and wall time. With
--both-scores, also the rejected fractions under the other rejection score
(columns *_dist or *_conf), from the same trained models.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score

import pybridge
from pybridge.data import align_columns, get_counts, log_cpm, shared_genes

from .tasks import PAIRS, PANC8_TECHS, VALIDATION_PAIRS  # the suite's task lists

ROOT = Path(__file__).resolve().parents[1]


def _file(data: Path, name: str):
    """A loader of ``<data>/<name>.h5ad`` that reads only when called."""
    return lambda: ad.read_h5ad(data / f"{name}.h5ad")


def dev_tasks(data: Path) -> dict:
    """name -> (reference loader, query loader); loaders defer reading until used."""

    def panc8(tech, query):
        def load():
            a = ad.read_h5ad(data / "panc8_small.h5ad")
            m = (a.obs["batch"] == tech).to_numpy()
            return (a[m] if query else a[~m]).copy()

        return load

    tasks = {f"panc8:{t}": (panc8(t, False), panc8(t, True)) for t in PANC8_TECHS}
    return tasks | {name: (_file(data, r), _file(data, q)) for name, (r, q) in PAIRS.items()}


def unseen_tasks(data: Path) -> dict:
    """Tasks with a type held out of the reference (besides zheng's B cells): name -> (reference, query) loaders."""

    def drop(load, cell_type):
        def inner():
            a = load()
            return a[(a.obs["cell_type"].astype(str) != cell_type).to_numpy()].copy()

        return inner

    def panc8(techs):
        def load():
            a = ad.read_h5ad(data / "panc8_small.h5ad")
            return a[a.obs["batch"].isin(techs).to_numpy()].copy()

        return load

    f = functools.partial(_file, data)
    five_p1, five_p3 = f("cellbench_sc_celseq2_5cl_p1"), f("cellbench_sc_celseq2_5cl_p3")
    return {
        "zheng_train->test": dev_tasks(data)["zheng_train->test"],
        "panc8:indrop-acinar": (drop(panc8(["celseq", "celseq2", "fluidigmc1"]), "acinar"), panc8(["indrop"])),
        "5cl_p1->p3-H1975": (drop(five_p1, "H1975"), five_p3),
        "5cl_p1->p3-HCC827": (drop(five_p1, "HCC827"), five_p3),
        "baron_mouse1->2-endothelial": (drop(f("baron_mouse1"), "endothelial"), f("baron_mouse2")),
        "baron_mouse1->2-delta": (drop(f("baron_mouse1"), "delta"), f("baron_mouse2")),
    }


def validation_tasks(data: Path) -> dict:
    """Held-out check tasks (``benchmarks.tasks.VALIDATION_PAIRS``): the reverse direction or another plate of the
    dev datasets. No default or option was chosen on them (added in session 14, after the options were fixed)."""
    return {name: (_file(data, r), _file(data, q)) for name, (r, q) in VALIDATION_PAIRS.items()}


def logreg(reference, query, labels_key="cell_type"):
    genes = shared_genes(reference.var_names, query.var_names)
    Xr = align_columns(log_cpm(get_counts(reference, what="reference")), reference.var_names, genes)
    Xq = align_columns(log_cpm(get_counts(query)), query.var_names, genes)
    clf = LogisticRegression(max_iter=1000)
    clf.fit(Xr, reference.obs[labels_key].astype(str).to_numpy())
    P = clf.predict_proba(Xq)
    return clf.classes_[P.argmax(1)], P.max(1)


def score(pred, conf, rejected, truth, ref_classes):
    truth = np.asarray(truth, dtype=str)
    pred = np.asarray(pred, dtype=str)
    seen = np.isin(truth, list(ref_classes))
    out = {
        "acc": float(np.mean(pred[seen] == truth[seen])),
        # over the query's types only, as benchmarks/metrics.py (a reference-only type predicted for a few cells
        # would otherwise enter the mean as a zero; before session 14 it did)
        "macro_f1": float(f1_score(truth[seen], pred[seen], average="macro", labels=sorted(set(truth[seen])))),
        "rej_seen": float(np.mean(rejected[seen])),
        "lowconf_seen": float(np.mean(conf[seen] < 0.5)),
    }
    if (~seen).any():
        out["rej_unseen"] = float(np.mean(rejected[~seen]))
        out["lowconf_unseen"] = float(np.mean(conf[~seen] < 0.5))
        out["conf_unseen"] = float(np.mean(conf[~seen]))
        out["conf_seen"] = float(np.mean(conf[seen]))
        out["auroc_unseen"] = float(roc_auc_score(~seen, -np.asarray(conf)))
    return out


def run(args) -> pd.DataFrame:
    sets = {"unseen": unseen_tasks(Path(args.data)), "validation": validation_tasks(Path(args.data))}
    if args.tasks in sets:
        tasks = sets[args.tasks]
        names = list(tasks)
    else:
        dev = dev_tasks(Path(args.data))
        tasks = dev | sets["unseen"] | sets["validation"]
        names = args.tasks.split(",") if args.tasks else list(dev)
    opts = {}
    for item in args.set or []:
        k, v = item.split("=", 1)
        opts[k] = json.loads(v) if v not in ("true", "false") else v == "true"
    rows = []
    for name in names:
        ref_load, q_load = tasks[name]
        ref, q = ref_load(), q_load()
        truth = q.obs["cell_type"].astype(str).to_numpy()
        classes = set(ref.obs["cell_type"].astype(str))
        if not args.skip_baseline:
            t0 = time.perf_counter()
            pred, conf = logreg(ref, q)
            dt = time.perf_counter() - t0
            rows.append(
                {"task": name, "tool": "logreg (log-CPM)", **score(pred, conf, conf < 0, truth, classes), "seconds": dt}
            )
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            t0 = time.perf_counter()
            model = pybridge.ScNym(seed=seed, device=args.device, verbose=False, **opts)
            dk = args.domain_key if args.domain_key and args.domain_key in ref.obs else None
            model.fit(ref, labels_key="cell_type", query=q, domain_key=dk)
            res = model.predict(q)
            dt = time.perf_counter() - t0
            tool = f"pybridge scNym{' ' + str(opts) if opts else ''}{f' domain_key={dk}' if dk else ''}"
            row = {
                "task": name,
                "tool": tool,
                **score(res.raw_labels, res.confidence, res.rejected, truth, classes),
                "seconds": dt,
                "seed": seed,
                "epochs": res.params["training"]["epochs_trained"],
            }
            if args.both_scores:
                # the same trained model, with the other rejection score (training does not depend on it)
                other = "distance" if model.config.rejection_score == "confidence" else "confidence"
                model.config = dataclasses.replace(model.config, reject=True, reject_score=other)
                res = model.predict(q)
                alt = score(res.raw_labels, res.confidence, res.rejected, truth, classes)
                row.update({f"{k}_{other[:4]}": alt[k] for k in ("rej_seen", "rej_unseen") if k in alt})
            rows.append(row)
        print(pd.DataFrame(rows[-(args.seeds + (0 if args.skip_baseline else 1)) :]).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


def main():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scnym",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--tasks",
        default=None,
        help="comma-separated task names (default: the 9 dev tasks); 'unseen': six tasks with a type "
        "missing from the reference; 'validation': six held-out check tasks",
    )
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--first-seed", type=int, default=0, help="seeds run: first-seed, ..., first-seed + seeds - 1")
    p.add_argument(
        "--both-scores",
        action="store_true",
        help="also score the other rejection rule (confidence / distance) on the same trained models",
    )
    p.add_argument("--set", action="append", help="scNym option key=value (JSON values)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument(
        "--domain-key",
        default=None,
        help="obs column of the reference's batches (e.g. 'batch' for panc8): multi-domain training "
        "on the tasks whose reference has it",
    )
    p.add_argument("--csv", default=None)
    args = p.parse_args()
    df = run(args)
    print("\n=== all tasks ===")
    print(df.to_string(index=False))
    print("\n=== mean over tasks ===")
    cols = [
        c
        for c in (
            "acc",
            "macro_f1",
            "rej_seen",
            "rej_unseen",
            "auroc_unseen",
            "rej_seen_dist",
            "rej_unseen_dist",
            "rej_seen_conf",
            "rej_unseen_conf",
            "seconds",
        )
        if c in df
    ]
    print(df.groupby("tool")[cols].mean().to_string())
    if args.csv:
        df.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
