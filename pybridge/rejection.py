"""Rejection of cells that fit no reference class (shared by every classifier).

The mechanism is JIND's (Goyal et al.): on held-out *validation* predictions of
the reference, each class k gets a threshold tau_k on the top probability such
that roughly a fraction ``outlier_fraction`` of the validation cells predicted
as k fall below it. At prediction time a cell whose top probability is below
the threshold of its predicted class is labelled ``"Unassigned"``.

The thresholds are computed from predictions, not true labels (as the paper
describes and the reference code does); a class with no validation predictions
keeps ``default``.
"""
from __future__ import annotations

import numpy as np

UNASSIGNED = "Unassigned"


def class_thresholds(probabilities: np.ndarray, outlier_fraction: float = 0.05, default: float = 0.9) -> np.ndarray:
    """Per-class thresholds from a (cells x classes) validation probability matrix."""
    if not 0.0 <= outlier_fraction < 1.0:
        raise ValueError(f"outlier_fraction must be in [0, 1), got {outlier_fraction}.")
    P = np.asarray(probabilities, dtype=np.float64)
    K = P.shape[1]
    tau = np.full(K, float(default))
    pred = P.argmax(axis=1)
    top = P.max(axis=1)
    for k in range(K):
        s = np.sort(top[pred == k])
        if len(s) == 0:
            continue
        pos = int(outlier_fraction * len(s))
        # the largest top-probability inside the bottom ``outlier_fraction`` of cells predicted as k;
        # with too few cells to hold any out, the smallest value (nothing below it is rejected)
        tau[k] = s[pos] if pos < len(s) else s[-1]
    return tau


def reject(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Boolean mask of rejected cells: top probability strictly below its class threshold."""
    P = np.asarray(probabilities)
    pred = P.argmax(axis=1)
    return P.max(axis=1) < np.asarray(thresholds)[pred]


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins on [0, 1] (Guo et al.; scNym's calibration metric)."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) on held-out labels."""
    import torch

    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))
