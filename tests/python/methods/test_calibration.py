"""Temperature scaling in the annotators (the shared Annotator layer): labels kept, NLL lowered, saved with the
model, and off by ``calibrate=False``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load

import pybridge
from pybridge.rejection import negative_log_likelihood, temperature_scale

#: short schedules: calibration is checked, not accuracy
FAST = {
    "scnym": dict(n_epochs=15, min_epochs=5, patience=5),
    "jind": dict(n_epochs=8, align=False),
}


@pytest.fixture(scope="module")
def panc8():
    a = load("panc8_small")
    m = (a.obs["batch"].astype(str) == "indrop").to_numpy()
    return a[~m].copy(), a[m].copy()


def _fit(method, ref, q, **kw):
    cls = pybridge.ScNym if method == "scnym" else pybridge.JIND
    model = cls(seed=0, device="cpu", verbose=False, reject=False, **FAST[method], **kw)
    return model.fit(ref, labels_key="cell_type", query=q)


@pytest.fixture(scope="module", params=["scnym", "jind"])
def fitted(request, panc8):
    ref, q = panc8
    return request.param, _fit(request.param, ref, q)


def test_temperature_scaling_keeps_the_ranking():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=50)
    for t in (0.3, 1.0, 2.5):
        q = temperature_scale(p, t)
        assert np.allclose(q.sum(axis=1), 1) and (q.argmax(axis=1) == p.argmax(axis=1)).all()
    assert (temperature_scale(p, 0.5).max(axis=1) >= p.max(axis=1) - 1e-12).all()  # T < 1 sharpens
    assert temperature_scale(p, 1.0) is p


def test_calibration_keeps_labels_and_lowers_validation_nll(fitted, panc8):
    method, model = fitted
    cal = model.calibration_
    assert cal["n_validation_cells"] >= 10 and cal["temperature"] > 0
    assert cal["validation_nll_after"] <= cal["validation_nll_before"] + 1e-9
    res = model.predict(panc8[1])
    assert res.raw_probabilities is not None
    assert (res.probabilities.argmax(1) == res.raw_probabilities.argmax(1)).all()
    assert np.allclose(res.probabilities, temperature_scale(res.raw_probabilities, model.temperature_))
    assert np.allclose(res.confidence, res.probabilities.max(axis=1))
    assert res.params["calibration"]["applied"] is True
    assert res.params["calibration"]["temperature"] == pytest.approx(model.temperature_)


def test_negative_log_likelihood():
    p = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8]])
    y = np.array([0, 1, 1])
    assert negative_log_likelihood(p, y) == pytest.approx(-np.mean(np.log([0.7, 0.4, 0.8])))


def test_saved_calibrated_model_predicts_the_same_after_load(fitted, panc8, tmp_path):
    method, model = fitted
    model.save(tmp_path / "m")
    loaded = pybridge.load(tmp_path / "m", device="cpu", verbose=False)
    assert loaded.temperature_ == pytest.approx(model.temperature_)
    a, b = model.predict(panc8[1]), loaded.predict(panc8[1])
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.labels, b.labels)
    if method == "jind":  # thresholds recomputed at load from the stored validation predictions, calibrated
        np.testing.assert_allclose(loaded.thresholds_, model.thresholds_)


def test_calibrate_false_gives_the_raw_softmax(fitted, panc8):
    method, model = fitted
    ref, q = panc8
    off = _fit(method, ref, q, calibrate=False)
    res_on, res_off = model.predict(q), off.predict(q)
    assert res_off.raw_probabilities is None and res_off.params["calibration"]["applied"] is False
    np.testing.assert_array_equal(res_off.probabilities, res_on.raw_probabilities)
    np.testing.assert_array_equal(res_off.labels, res_on.labels)
    ad = res_off.to_adata(q.copy(), "k", copy=True)
    assert "k_probabilities_raw" not in ad.obsm
    ad2 = res_on.to_adata(q.copy(), "k", copy=True)
    assert "k_probabilities_raw" in ad2.obsm
    res_off.to_adata(ad2, "k")  # a re-run without calibration drops the stale raw matrix
    assert "k_probabilities_raw" not in ad2.obsm
