"""The method registry (pybridge/models/_registry.py): one typed record per method, read by the API, the CLI,
the R bridge and the benchmarks; and ``load`` picking the estimator class from a saved model's metadata."""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import warnings

import numpy as np
import pytest
from input_matrix_helpers import TINY, one_thread, toy  # noqa: F401 (one_thread: an autouse fixture)

import pybridge
import pybridge.api as api
from pybridge import _io
from pybridge.models import _registry
from pybridge.models._registry import REGISTRY, MethodInfo, get_method, method_of_estimator, methods

EXPECTED = {  # name: (kind, reference, estimator, maps_types)
    "scnym": ("annotation", "required", pybridge.ScNym, False),
    "jind": ("annotation", "required", pybridge.JIND, False),
    "itclust": ("clustering", "required", pybridge.ItClust, True),
    "cicl": ("clustering", "none", pybridge.CICL, False),
    "nmf_transfer": ("clustering", "optional", pybridge.NMFTransfer, True),
    "linear": ("annotation", "required", pybridge.Linear, False),
}


def test_every_method_is_registered_once_under_its_own_name():
    assert methods() == sorted(EXPECTED) == sorted(REGISTRY)
    for name, info in REGISTRY.items():
        assert type(info) is MethodInfo and info.name == name
        assert get_method(name) is info
    assert len({info.estimator for info in REGISTRY.values()}) == len(REGISTRY)
    assert len({info.compute for info in REGISTRY.values()}) == len(REGISTRY)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kind_reference_estimator_and_compute_of_each_method(name):
    kind, reference, estimator, maps_types = EXPECTED[name]
    info = get_method(name)
    assert (info.kind, info.reference, info.estimator, info.maps_types) == (kind, reference, estimator, maps_types)
    assert info.compute is getattr(api, f"compute_{name}")
    assert method_of_estimator(estimator) is info
    assert info.extra_fields == (("cell_score", "raw_cell_types") if name == "itclust" else ())


def test_methods_by_kind():
    assert methods("annotation") == ["jind", "linear", "scnym"]
    assert methods("clustering") == ["cicl", "itclust", "nmf_transfer"]
    assert methods("no such kind") == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_compute_takes_query_then_reference(name):
    """One calling convention: ``compute(query, reference=None, **options)``; the reference may be left out
    exactly when the method does not require one."""
    info = get_method(name)
    params = list(inspect.signature(info.compute).parameters.values())
    assert params[1].name == "reference"
    assert params[0].kind == params[1].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    if info.reference != "required":
        assert params[1].default is None
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def test_a_method_without_reference_refuses_one():
    with pytest.raises(ValueError, match="takes no reference"):
        get_method("cicl").compute(toy(), toy(seed=1))


def test_unknown_method_is_a_value_error_listing_the_available_ones():
    with pytest.raises(
        ValueError, match="Unknown method 'scnim'; available: cicl, itclust, jind, linear, nmf_transfer, scnym"
    ):
        get_method("scnim")
    with pytest.raises(ValueError, match="is not a registered estimator"):
        method_of_estimator(dict)


def test_records_are_frozen_and_validated():
    info = get_method("scnym")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.kind = "clustering"
    with pytest.raises(ValueError, match="kind must be 'annotation' or 'clustering'"):
        MethodInfo("x", "labelling", "required", pybridge.ScNym, api.compute_scnym)
    with pytest.raises(ValueError, match="reference must be 'required', 'optional' or 'none'"):
        MethodInfo("x", "annotation", "sometimes", pybridge.ScNym, api.compute_scnym)


def test_register_refuses_a_second_method_under_a_taken_name(monkeypatch):
    monkeypatch.setattr(_registry, "REGISTRY", dict(REGISTRY))  # leave the real registry as it was
    info = get_method("scnym")
    assert _registry.register(info) is info  # registering the same record again is harmless
    with pytest.raises(ValueError, match="A method named 'scnym' is registered already"):
        _registry.register(dataclasses.replace(info, reference="optional"))
    assert _registry.REGISTRY["scnym"] is info
    new = dataclasses.replace(info, name="scnym2")
    _registry.register(new)
    assert _registry.methods("annotation") == ["jind", "linear", "scnym", "scnym2"]
    assert "scnym2" not in REGISTRY


def test_outputs_name_what_a_result_writes():
    assert get_method("scnym").outputs("k") == ["k", "k_confidence", "k_raw", "k_probabilities", "X_k"]
    assert get_method("cicl").outputs("k") == ["k", "k_confidence", "k_probabilities", "X_k"]
    assert get_method("nmf_transfer").outputs("k") == ["k", "k_confidence", "k_probabilities", "X_k", "k_cell_type"]
    assert get_method("itclust").outputs("k") == [
        "k",
        "k_confidence",
        "k_probabilities",
        "X_k",
        "k_cell_type",
        "k_cell_score",
        "k_cell_type_raw",
    ]


# ============================================================================ load
def _fit(name, ref, q):
    opts = {**TINY[name], "device": "cpu", "verbose": False}
    if name == "nmf_transfer":
        opts.pop("n_clusters")  # a predict() argument there
    model = get_method(name).estimator(**opts)
    if name == "cicl":
        return model.fit(q)
    if name == "nmf_transfer":
        return model.fit(ref)
    return model.fit(ref, query=q)


def _predict(name, model, q):
    res = model.predict(q, n_clusters=3) if name == "nmf_transfer" else model.predict(q)
    return np.asarray(res.labels if get_method(name).kind == "annotation" else res.clusters, dtype=str)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny fitted model per method, saved, with its predictions on the query."""
    root = tmp_path_factory.mktemp("registry_models")
    ref, q = toy(), toy(seed=1, prefix="q")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(EXPECTED):
            model = _fit(name, ref, q)
            model.save(root / name)
            out[name] = (root / name, _predict(name, model, q))
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_picks_the_class_from_the_saved_model(name, saved):
    path, before = saved[name]
    assert json.loads((path / _io.META).read_text())["method"] == name
    model = _registry.load(path, device="cpu", verbose=False)
    assert type(model) is EXPECTED[name][2]
    np.testing.assert_array_equal(_predict(name, model, toy(seed=1, prefix="q")), before)


def test_pybridge_load_is_the_registry_load():
    assert pybridge.load is _registry.load


def test_load_of_a_model_naming_an_unknown_method_is_a_clear_error(saved, tmp_path):
    path = tmp_path / "renamed"
    shutil.copytree(saved["scnym"][0], path)
    meta = json.loads((path / _io.META).read_text())
    (path / _io.META).write_text(json.dumps({**meta, "method": "retired_method"}))
    with pytest.raises(ValueError, match="Unknown method 'retired_method'"):
        _registry.load(path)
    with pytest.raises(ValueError, match="not a pybridge model directory"):
        _registry.load(tmp_path / "nothing_here")
