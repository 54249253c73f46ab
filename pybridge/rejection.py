"""Rejection of cells that fit no reference class (shared by every classifier).

The mechanism is JIND's (Goyal et al.): on held-out *validation* predictions of
the reference, each class k gets a threshold tau_k on the top probability such
that roughly a fraction ``outlier_fraction`` of the validation cells predicted
as k fall below it. At prediction time a cell whose top probability is below
the threshold of its predicted class is labelled ``"Unassigned"``.

The thresholds are computed from predictions, not true labels (as the paper
describes and the reference code does); a class with no validation predictions
keeps ``default``.

A second score, used by scNym's ``reject_score="distance"``: the mean distance
of a cell's embedding to its k nearest reference cells, with per-class
thresholds from the reference's own leave-one-out distances
(:func:`distance_thresholds`), raised where the query's own distances call for
it (:func:`query_distance_thresholds`). A cell of a type the reference lacks can
be assigned to a known class with high probability and still lie far from every
reference cell.
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


def temperature_scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row: the same ranking (so the same labels), sharper for T < 1, flatter for
    T > 1. ``T = 1`` returns the input unchanged."""
    p = np.asarray(probabilities, dtype=np.float64)
    if temperature == 1.0:
        return p
    z = np.log(np.clip(p, 1e-300, None)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p(true class)`` (probabilities clipped at 1e-12)."""
    p = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


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


def knn_distances(
    points: np.ndarray, bank: np.ndarray, k: int, *, leave_one_out: bool = False, chunk: int = 1024
) -> np.ndarray:
    """Mean Euclidean distance from each row of ``points`` to its ``k`` nearest rows of ``bank``.

    ``leave_one_out``: ``points`` is ``bank`` itself and each row's zero distance to itself is skipped.
    Computed in chunks of ``chunk`` rows (float32, CPU), so memory stays chunk x len(bank).
    """
    import torch

    B = torch.as_tensor(np.asarray(bank, dtype=np.float32))
    k_eff = min(int(k), B.shape[0] - (1 if leave_one_out else 0))
    if k_eff < 1:
        raise ValueError("knn_distances needs at least one reference point besides the cell itself.")
    P = np.asarray(points, dtype=np.float32)
    out = np.empty(P.shape[0], dtype=np.float64)
    for s in range(0, P.shape[0], chunk):
        d = torch.cdist(torch.as_tensor(P[s : s + chunk]), B)
        if leave_one_out:
            d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out[s : s + chunk] = d.topk(k_eff, dim=1, largest=False).values.mean(1).double().numpy()
    return out


def distance_thresholds(
    bank: np.ndarray, codes: np.ndarray, n_classes: int, k: int, outlier_fraction: float = 0.05
) -> np.ndarray:
    """Per-class thresholds on the k-NN distance to the reference, from the reference itself.

    Each reference cell's leave-one-out distance to its ``k`` nearest other reference cells is
    computed; class c's threshold is the ``1 - outlier_fraction`` quantile of those distances among
    the cells labelled c, so about ``outlier_fraction`` of each class lies beyond it. A class with no
    cells in ``bank`` gets infinity (nothing predicted as it is rejected by distance).
    """
    if not 0.0 <= outlier_fraction < 1.0:
        raise ValueError(f"outlier_fraction must be in [0, 1), got {outlier_fraction}.")
    d = knn_distances(bank, bank, k, leave_one_out=True)
    codes = np.asarray(codes)
    tau = np.full(int(n_classes), np.inf)
    for c in range(int(n_classes)):
        if (codes == c).any():
            tau[c] = float(np.quantile(d[codes == c], 1.0 - outlier_fraction))
    return tau


def query_distance_thresholds(
    distances: np.ndarray, predicted: np.ndarray, n_classes: int, nmads: float = 3.0, min_cells: int = 3
) -> np.ndarray:
    """Per-class outlier thresholds on the query's own k-NN distances: median + ``nmads`` MADs.

    The cells predicted as class c form the sample (MAD scaled by 1.4826 to match a normal
    standard deviation; ``nmads`` = 3 is scater's ``isOutlier`` default). Classes with fewer than
    ``min_cells`` predicted cells get infinity. Used with the reference thresholds of
    :func:`distance_thresholds` (the larger of the two applies), so a query whose cells all lie
    farther from the reference than the reference's own cells (another technology) is not rejected
    wholesale, while cells far out in their predicted class still are.
    """
    d = np.asarray(distances, dtype=float)
    pred = np.asarray(predicted)
    tau = np.full(int(n_classes), np.inf)
    for c in range(int(n_classes)):
        x = d[pred == c]
        if len(x) >= min_cells:
            med = np.median(x)
            tau[c] = med + nmads * 1.4826 * np.median(np.abs(x - med))
    return tau
