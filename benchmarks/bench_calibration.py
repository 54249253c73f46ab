"""Calibration and the consensus call, measured on the dev and the validation tasks.

    python -m benchmarks.bench_calibration [--task-set dev|validation|both] [--out out/bench_calibration]

For each task, scNym, JIND and the linear annotator are trained once (seed 0, their
defaults, CPU); each result holds the calibrated probabilities and the raw ones
(what ``calibrate=False`` gives: calibration does not touch training), so both are
scored from one fit. Consensus rows are combined from the same fitted members
(:func:`pybridge._consensus.combine`), for every set of two or three members.
Scikit-learn's logistic regression (C=1, lbfgs, log1p CPM; the benchmark's ``logreg``
peer) is the reference point for ECE. Scores are on the query cells whose type is
in the reference (accuracy of the label before rejection, ECE of the top score),
and on Zheng the share of shared-type and of unseen (B) cells rejected, by each
member's own rule (``reject`` as configured) with the calibrated thresholds and by
JIND with thresholds on the raw scores. Writes ``benchmarks/CALIBRATION.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .formatting import md_table
from .metrics import ece
from .peers import _csr, lognorm
from .tasks import ANNOTATION_TASKS, VALIDATION_TASKS, prepare_transfer

MEMBERS = ("scnym", "jind", "linear")
HERE = Path(__file__).resolve().parent


def _scores(labels, conf, truth, seen) -> dict:
    ok = np.asarray(labels, dtype=str)[seen] == truth[seen]
    return {"acc": float(ok.mean()), "ece": ece(np.asarray(conf)[seen], ok)}


def _logreg(ref, q):
    from sklearn.linear_model import LogisticRegression

    y = ref.obs["cell_type"].astype(str).to_numpy()
    clf = LogisticRegression(C=1.0, max_iter=1000, random_state=0).fit(lognorm(_csr(ref), 1e6), y)
    p = clf.predict_proba(lognorm(_csr(q), 1e6))
    return clf.classes_[p.argmax(1)].astype(str), p.max(1)


def run_task(name: str, data: Path, root: Path) -> list[dict]:
    import anndata as ad

    from pybridge._consensus import combine
    from pybridge.models._registry import get_method
    from pybridge.rejection import UNASSIGNED, class_thresholds, reject

    prep = prepare_transfer(name, data, root)
    ref, q = ad.read_h5ad(prep.dir / "ref.h5ad"), ad.read_h5ad(prep.dir / "query.h5ad")
    truth = np.asarray(prep.truth, dtype=str)
    seen = np.isin(truth, prep.ref_classes)
    rows, results = [], {}
    for m in MEMBERS:
        t0 = time.perf_counter()
        info = get_method(m)
        model = info.estimator(seed=0, device="cpu", verbose=False)
        info.fit(model, ref, q, labels_key="cell_type")  # as compute_<m>: the query as unlabelled target data
        res = model.predict(q)
        secs = time.perf_counter() - t0
        results[m] = res
        raw = res.raw_probabilities if res.raw_probabilities is not None else res.probabilities
        before = _scores(res.raw_labels, raw.max(1), truth, seen)
        after = _scores(res.raw_labels, res.confidence, truth, seen)
        cal = res.params.get("calibration") or {}
        row = {"task": name, "tool": m, "acc": after["acc"], "ece_raw": before["ece"], "ece_cal": after["ece"]}
        row.update({"temperature": cal.get("temperature"), "seconds": secs})
        if (~seen).any():
            rej = np.asarray(res.labels == UNASSIGNED)
            row.update({"rej_seen": float(rej[seen].mean()), "rej_unseen": float(rej[~seen].mean())})
            if getattr(model, "val_probabilities_", None) is not None:  # JIND: thresholds on the raw scores
                rr = reject(raw, class_thresholds(model.val_probabilities_, model.config.outlier_fraction))
                row.update({"rej_seen_rawthr": float(rr[seen].mean()), "rej_unseen_rawthr": float(rr[~seen].mean())})
        rows.append(row)
    for k in (2, 3):
        for combo in itertools.combinations(MEMBERS, k):
            c = combine({m: results[m] for m in combo})
            s = _scores(c.raw_labels, c.confidence, truth, seen)
            row = {"task": name, "tool": "consensus:" + "+".join(combo), "acc": s["acc"], "ece_cal": s["ece"]}
            if (~seen).any():
                rej = np.asarray(c.labels == UNASSIGNED)
                row.update({"rej_seen": float(rej[seen].mean()), "rej_unseen": float(rej[~seen].mean())})
            rows.append(row)
    t0 = time.perf_counter()
    lab, conf = _logreg(ref, q)
    s = _scores(lab, conf, truth, seen)
    rows.append(
        {
            "task": name,
            "tool": "logreg (scikit-learn)",
            "acc": s["acc"],
            "ece_raw": s["ece"],
            "seconds": time.perf_counter() - t0,
        }
    )
    return rows


def summary(df: pd.DataFrame) -> pd.DataFrame:
    g = df.groupby("tool", sort=False)
    out = g[["acc", "ece_raw", "ece_cal"]].mean()
    out["tasks"] = g.size()
    return out.reset_index()


def write_md(dev: pd.DataFrame | None, val: pd.DataFrame | None, path: Path) -> None:
    cols = ["tool", "acc", "ece_raw", "ece_cal", "tasks"]
    names = ["tool", "mean accuracy", "ECE raw", "ECE calibrated", "tasks"]
    lines = [
        "# Calibration and consensus",
        "",
        "Made by `python -m benchmarks.bench_calibration` (seed 0, defaults, CPU). Accuracy: label before rejection,",
        "on query cells whose type the reference has; ECE: 10 equal-width bins of the top score on those cells.",
        "'ECE raw' is what `calibrate=False` gives (the same fit: calibration does not change training);",
        "'ECE calibrated' the default. Consensus rows combine the same fitted members (mean of calibrated",
        "probabilities). Logistic regression is scikit-learn's (C=1, log1p CPM), the benchmark's `logreg` peer.",
        "",
    ]
    for title, df in (("Dev tasks", dev), ("Validation tasks", val)):
        if df is None or df.empty:
            continue
        lines += [f"## {title} (mean over {df['task'].nunique()} tasks)", "", md_table(summary(df), cols, names), ""]
        per = df.pivot_table(index="task", columns="tool", values="acc", sort=False).reset_index()
        lines += ["Accuracy per task:", "", md_table(per, list(per.columns)), ""]
    for title, df in (("Zheng (B cells unseen): rejection", dev), ("Zheng test -> train: rejection", val)):
        if df is None or "rej_unseen" not in df:
            continue
        z = df[df["rej_unseen"].notna()]
        if z.empty:
            continue
        cols_r = [c for c in ("rej_seen", "rej_unseen", "rej_seen_rawthr", "rej_unseen_rawthr") if c in z]
        lines += [f"## {title}", "", md_table(z, ["task", "tool", *cols_r], None), ""]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task-set", choices=["dev", "validation", "both"], default="both")
    p.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=Path("out/bench_calibration"))
    p.add_argument("--md", type=Path, default=HERE / "CALIBRATION.md")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: the task set)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--from-csv", action="store_true", help="only rewrite the page from the CSVs in --out")
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    frames = {}
    if a.from_csv:
        frames = {
            ts: pd.read_csv(a.out / f"{ts}.csv") for ts in ("dev", "validation") if (a.out / f"{ts}.csv").exists()
        }
    for ts, tasks in (("dev", ANNOTATION_TASKS), ("validation", VALIDATION_TASKS)):
        if a.task_set not in (ts, "both") or a.from_csv:
            continue
        if a.tasks:
            tasks = [t for t in a.tasks.split(",") if t in tasks]
        rows = []
        for t in tasks:
            t0 = time.perf_counter()
            rows += run_task(t, a.data, a.out / "prepared")
            print(f"{ts} {t}: {time.perf_counter() - t0:.0f} s", flush=True)
        frames[ts] = pd.DataFrame(rows)
        frames[ts].to_csv(a.out / f"{ts}.csv", index=False)
    write_md(frames.get("dev"), frames.get("validation"), a.md)
    print(json.dumps({ts: summary(df).to_dict(orient="records") for ts, df in frames.items()}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
