"""Scores of one tool's predictions against the truth.

Annotation (on query cells whose type is in the reference, "seen"):
  acc, macro_f1   of the label *before* rejection (``raw_label``), so tools that
                  reject and tools that do not are compared on the same cells;
  acc_kept        accuracy on the seen cells the tool did not reject;
  rej_seen        fraction of seen cells rejected;
  rej_unseen      fraction of cells of types absent from the reference rejected;
  auroc_unseen    how well the tool's score separates unseen from seen cells
                  (lower score = more likely unseen; threshold-free, so tools
                  without a rejection rule are comparable);
  ece             expected calibration error (10 equal-width bins) of ``confidence``
                  against raw-label correctness on seen cells (NaN where the tool
                  has no probability-like confidence).
Clustering (all query cells): ari, nmi (arithmetic), k_found.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score, roc_auc_score

from pybridge.rejection import expected_calibration_error

N_BINS = 10


def ece(confidence, correct, n_bins: int = N_BINS) -> float:
    c = np.asarray(confidence, float)
    ok = np.asarray(correct, float)
    m = np.isfinite(c)
    if not m.any():
        return float("nan")
    return expected_calibration_error(np.clip(c[m], 0, 1), ok[m], n_bins)


def reliability(confidence, correct, n_bins: int = N_BINS) -> pd.DataFrame:
    """Per-bin counts, correct counts and confidence sums (summable over tasks)."""
    c = np.asarray(confidence, float)
    ok = np.asarray(correct, float)
    m = np.isfinite(c)
    c, ok = np.clip(c[m], 0, 1), ok[m]
    bins = np.minimum((c * n_bins).astype(int), n_bins - 1)
    rows = [
        {
            "bin": b,
            "n": int((bins == b).sum()),
            "correct": float(ok[bins == b].sum()),
            "conf_sum": float(c[bins == b].sum()),
        }
        for b in range(n_bins)
    ]
    return pd.DataFrame(rows)


def annotation_scores(pred: pd.DataFrame, truth, ref_classes) -> dict:
    truth = np.asarray(truth, dtype=str)
    raw = pred["raw_label"].astype(str).to_numpy()
    seen = np.isin(truth, list(ref_classes))
    rejected = pred["rejected"].to_numpy().astype(bool) if "rejected" in pred else np.zeros(len(truth), bool)
    out = {"n_seen": int(seen.sum())}
    ok = raw[seen] == truth[seen]
    out["acc"] = float(ok.mean())
    out["macro_f1"] = float(f1_score(truth[seen], raw[seen], average="macro", labels=sorted(set(truth[seen]))))
    keep = ~rejected[seen]
    out["acc_kept"] = float(ok[keep].mean()) if keep.any() else float("nan")
    out["rej_seen"] = float(rejected[seen].mean())
    conf = pd.to_numeric(pred.get("confidence", pd.Series(np.nan, index=pred.index)), errors="coerce").to_numpy()
    out["ece"] = ece(conf[seen], ok)
    if (~seen).any():
        out["n_unseen"] = int((~seen).sum())
        out["rej_unseen"] = float(rejected[~seen].mean())
        score = pd.to_numeric(pred.get("score", pd.Series(np.nan, index=pred.index)), errors="coerce").to_numpy()
        if np.isfinite(score).all():
            out["auroc_unseen"] = float(roc_auc_score((~seen).astype(int), -score))
    return out


def clustering_scores(labels, truth) -> dict:
    labels = np.asarray(labels, dtype=str)
    truth = np.asarray(truth, dtype=str)
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
        "k_found": int(len(set(labels))),
    }
