"""pybridge.pl: reliability diagram and confidence plot of a stored annotation (synthetic results, no training)."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import pybridge  # noqa: E402
from pybridge.rejection import expected_calibration_error  # noqa: E402
from pybridge.result import AnnotationResult  # noqa: E402

CLASSES = ["T cell", "B cell", "NK/ILC"]


def _annotated(reject: bool = True, n: int = 300, seed: int = 0, **params) -> ad.AnnData:
    """An AnnData with a synthetic annotation under "ann" and true labels (with an unseen type) in "cell_type"."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(CLASSES + ["Monocyte"], size=n, p=[0.45, 0.25, 0.15, 0.15])
    logits = rng.normal(size=(n, len(CLASSES)))
    for i, t in enumerate(truth):
        if t in CLASSES:
            logits[i, CLASSES.index(t)] += rng.uniform(0, 4)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    raw = np.asarray(CLASSES, dtype=object)[probs.argmax(1)]
    thresholds = np.array([0.6, 0.5, 0.55])
    labels = raw.copy()
    if reject:
        labels[probs.max(1) < thresholds[probs.argmax(1)]] = "Unassigned"
    adata = ad.AnnData(X=np.zeros((n, 2), dtype=np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]))
    adata.obs["cell_type"] = pd.Categorical(truth)
    res = AnnotationResult(
        obs_names=adata.obs_names,
        classes=CLASSES,
        probabilities=probs,
        labels=labels,
        raw_labels=raw,
        confidence=probs.max(1),
        method="jind",
        rejection=reject,
        params={"thresholds": [float(t) for t in thresholds], **params},
    )
    res.to_adata(adata, key_added="ann")
    return adata


def _same(a: ad.AnnData, b: ad.AnnData) -> None:
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert list(a.obsm.keys()) == list(b.obsm.keys())
    for k in a.obsm:
        np.testing.assert_array_equal(a.obsm[k], b.obsm[k])
    assert list(a.uns.keys()) == list(b.uns.keys())
    for k, v in a.uns["ann"].items():
        np.testing.assert_array_equal(np.asarray(v, dtype=object), np.asarray(b.uns["ann"][k], dtype=object))
    np.testing.assert_array_equal(a.X, b.X)


def _expected_ece(adata: ad.AnnData) -> float:
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    seen = np.isin(truth, CLASSES)
    pred = adata.obs["ann_raw"].astype(str).to_numpy()
    return expected_calibration_error(adata.obs["ann_confidence"].to_numpy()[seen], pred[seen] == truth[seen], 10)


def test_reliability_figure():
    adata = _annotated()
    before = adata.copy()
    fig = pybridge.pl.reliability(adata, "ann", "cell_type")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # diagram + cells per bin
    main = fig.axes[0]
    diagonal = [ln for ln in main.get_lines() if list(ln.get_xdata()) == [0, 1] and list(ln.get_ydata()) == [0, 1]]
    assert len(diagonal) == 1
    ece = float(re.search(r"ECE = ([0-9.]+)", main.get_title()).group(1))
    assert ece == pytest.approx(_expected_ece(adata), abs=5e-4)
    assert "left out" in main.get_title()  # the Monocytes, a type the reference lacks
    # the count panel holds every scored cell once
    n_seen = int(adata.obs["cell_type"].isin(CLASSES).sum())
    assert sum(p.get_height() for p in fig.axes[1].patches) == n_seen
    _same(adata, before)


def test_reliability_into_given_axes_and_bins():
    adata = _annotated()
    host = Figure()
    ax = host.add_subplot()
    fig = pybridge.pl.reliability(adata, "ann", "cell_type", n_bins=5, ax=ax)
    assert fig is host and len(fig.axes) == 1
    assert len(ax.collections) == 1  # the points, area ~ cells
    assert len(ax.patches) <= 5


def test_reliability_without_rejection_scores_labels():
    adata = _annotated(reject=False)
    assert "ann_raw" not in adata.obs
    fig = pybridge.pl.reliability(adata, "ann", "cell_type")
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    seen = np.isin(truth, CLASSES)
    pred = adata.obs["ann"].astype(str).to_numpy()
    expected = expected_calibration_error(adata.obs["ann_confidence"].to_numpy()[seen], pred[seen] == truth[seen])
    assert f"ECE = {expected:.3f}" in fig.axes[0].get_title()


def test_confidence_figure_with_truth_and_thresholds():
    adata = _annotated()
    before = adata.copy()
    fig = pybridge.pl.confidence(adata, "ann", "cell_type")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    # types by frequency of the label before rejection
    order = adata.obs["ann_raw"].astype(str).value_counts().index.tolist()
    assert [t.get_text().rsplit(" (", 1)[0] for t in ax.get_xticklabels()] == order
    violins = [c for c in ax.collections if isinstance(c, PolyCollection)]
    colours = {tuple(np.round(c.get_facecolor()[0][:3], 3)) for c in violins}
    assert len(colours) == 2  # correct vs wrong
    marks = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_label() == "rejection threshold"]
    assert len(marks) == 1
    ys = sorted(seg[0][1] for seg in marks[0].get_segments())
    assert ys == pytest.approx(sorted([0.6, 0.5, 0.55]))
    assert "rejected as Unassigned" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("correct") for t in legend) and any(t.startswith("wrong") for t in legend)
    _same(adata, before)


def test_confidence_without_truth_or_applied_thresholds():
    adata = _annotated(reject=False)
    fig = pybridge.pl.confidence(adata, "ann")
    ax = fig.axes[0]
    assert not [c for c in ax.collections if isinstance(c, LineCollection) and c.get_label() == "rejection threshold"]
    assert len({tuple(c.get_facecolor()[0][:3]) for c in ax.collections if isinstance(c, PolyCollection)}) == 1
    # scNym's distance rejection: its thresholds are not on this score
    adata = _annotated(reject=True, reject_score="distance")
    ax = pybridge.pl.confidence(adata, "ann").axes[0]
    assert not [c for c in ax.collections if isinstance(c, LineCollection) and c.get_label() == "rejection threshold"]


def test_confidence_small_groups_and_given_axes():
    adata = _annotated(n=12, seed=3)
    host = Figure()
    fig = pybridge.pl.confidence(adata, "ann", "cell_type", ax=host.add_subplot())
    assert fig is host


def test_no_pyplot_state():
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    adata = _annotated()
    pybridge.pl.reliability(adata, "ann", "cell_type")
    pybridge.pl.confidence(adata, "ann", "cell_type")
    assert plt.get_fignums() == open_before  # nothing left open in pyplot (no figure shown twice in notebooks)


def test_errors():
    adata = _annotated()
    before = adata.copy()
    with pytest.raises(ValueError, match="No annotation under key 'nope'.*'ann'"):
        pybridge.pl.reliability(adata, "nope", "cell_type")
    with pytest.raises(ValueError, match="No annotation under key 'nope'"):
        pybridge.pl.confidence(adata, "nope")
    with pytest.raises(ValueError, match="needs truth_key"):
        pybridge.pl.reliability(adata, "ann")
    with pytest.raises(ValueError, match="truth_key='celltype' is not a column"):
        pybridge.pl.reliability(adata, "ann", "celltype")
    with pytest.raises(ValueError, match="truth_key='celltype' is not a column"):
        pybridge.pl.confidence(adata, "ann", "celltype")
    adata.obs["other"] = "x"
    with pytest.raises(ValueError, match="shares no labels"):
        pybridge.pl.reliability(adata, "ann", "other")
    with pytest.raises(ValueError, match="n_bins"):
        pybridge.pl.reliability(adata, "ann", "cell_type", n_bins=0)
    del adata.obs["other"]
    _same(adata, before)
