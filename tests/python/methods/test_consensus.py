"""The consensus call: mean of the members' calibrated probabilities, agreement, rejection, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import load

from pybridge._consensus import check_methods, combine, compute_consensus
from pybridge.rejection import UNASSIGNED
from pybridge.result import AnnotationResult

FAST = {"scnym": dict(n_epochs=15, min_epochs=5, patience=5), "jind": dict(n_epochs=8, align=False)}


def _result(classes, probs, thresholds, cells):
    probs = np.asarray(probs, dtype=float)
    raw = np.asarray(classes, dtype=object)[probs.argmax(1)]
    return AnnotationResult(
        obs_names=pd.Index(cells),
        classes=list(classes),
        probabilities=probs,
        labels=raw.copy(),
        raw_labels=raw,
        confidence=probs.max(1),
        params={"thresholds": thresholds},
    )


def test_combine_on_known_results():
    cells = ["c1", "c2", "c3"]
    a = _result(["A", "B"], [[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]], [0.5, 0.5], cells)
    b = _result(["A", "B", "C"], [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], [0.6, 0.6, 0.6], cells)
    res = combine({"a": a, "b": b})
    mean = np.array([[0.85, 0.1, 0.05], [0.55, 0.4, 0.05], [0.3, 0.3, 0.4]])  # C is 0 for a
    np.testing.assert_allclose(res.probabilities, mean)
    assert res.classes == ["A", "B", "C"]
    assert list(res.raw_labels) == ["A", "A", "C"]
    np.testing.assert_allclose(res.agreement, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(res.params["thresholds"], [0.55, 0.55, 0.3])
    # c2: members disagree and 0.55 >= 0.55 keeps it; c3: disagree, 0.4 >= 0.3 keeps it
    assert list(res.labels) == ["A", "A", "C"]
    strict = combine({"a": a, "b": _result(b.classes, b.probabilities, [0.9, 0.9, 0.9], cells)})
    assert list(strict.labels) == ["A", UNASSIGNED, UNASSIGNED]  # agreeing cells are never rejected
    assert list(combine({"a": a, "b": b}, reject=False).labels) == ["A", "A", "C"]
    import anndata as ad

    adata = ad.AnnData(np.zeros((3, 2), dtype=np.float32), obs=pd.DataFrame(index=cells))
    strict.to_adata(adata, "cons")
    assert list(adata.obs["cons"].astype(str)) == ["A", UNASSIGNED, UNASSIGNED]
    np.testing.assert_allclose(adata.obs["cons_agreement"], [1.0, 0.5, 0.5])
    assert list(adata.obs["cons_b"].astype(str)) == ["A", "A", "C"]  # each member's own label, kept
    np.testing.assert_allclose(adata.obs["cons_a_confidence"], [0.9, 0.6, 0.5])
    assert adata.obsm["cons_probabilities"].shape == (3, 3) and adata.uns["cons"]["method"] == "consensus"


@pytest.mark.parametrize(
    "methods, match",
    [
        (("scnym",), "at least two"),
        (("scnym", "scnym"), "named twice"),
        (("scnym", "nope"), "Unknown method"),
        (("scnym", "cicl"), "not an annotation method"),
    ],
)
def test_bad_method_lists(methods, match):
    with pytest.raises(ValueError, match=match):
        check_methods(methods)


@pytest.mark.slow
def test_consensus_on_panc8_is_the_argmax_of_the_mean():
    a = load("panc8_small")
    m = (a.obs["batch"].astype(str) == "indrop").to_numpy()
    ref, q = a[~m].copy(), a[m].copy()
    res = compute_consensus(q, ref, methods=("scnym", "jind"), seed=0, device="cpu", verbose=False, options=FAST)
    out = res.to_adata(q.copy(), "consensus", copy=True)
    classes = list(out.uns["consensus"]["classes"])
    assert classes == res.members["scnym"].classes == res.members["jind"].classes
    mean = (res.members["scnym"].probabilities + res.members["jind"].probabilities) / 2  # calibrated
    expected = np.asarray(classes, dtype=object)[mean.argmax(1)]
    raw = out.obs["consensus"].astype(str).to_numpy()
    kept = raw != UNASSIGNED
    assert (raw[kept] == expected[kept]).all()
    agreement = out.obs["consensus_agreement"].to_numpy()
    assert ((agreement >= 0.5) & (agreement <= 1)).all()
    assert (agreement[~kept] < 1).all()  # only disagreeing cells are rejected
    votes = np.stack([out.obs[f"consensus_{k}"].astype(str).to_numpy() for k in FAST])
    np.testing.assert_allclose(agreement[kept], (votes[:, kept] == expected[kept]).mean(0))
    acc = (raw[kept] == q.obs["cell_type"].astype(str).to_numpy()[kept]).mean()
    assert acc > 0.85
