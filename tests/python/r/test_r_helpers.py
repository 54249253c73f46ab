"""The Python side of the R bridge without R: requests, option coercion, errors and results as data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pybridge import ScNym
from pybridge.r import coerce_options, result_to_dict, run_from_r
from pybridge.result import AnnotationResult, ClusteringResult

ROOT = Path(__file__).resolve().parents[3]


def _payload(adata, obs_cols=()):
    """What reticulate hands over for a dgCMatrix: scipy CSC genes x cells with read-only arrays."""
    X = sp.csc_matrix(adata.X.T.astype(np.float64))
    for arr in (X.data, X.indices, X.indptr):
        arr.setflags(write=False)
    obs = adata.obs[list(obs_cols)].copy() if obs_cols else pd.DataFrame(index=adata.obs_names)
    obs.index = range(adata.n_obs)  # R data.frame rownames are not relied on
    return {
        "kind": "matrix",
        "X": X,
        "obs_names": list(adata.obs_names),
        "var_names": list(adata.var_names),
        "obs": obs,
    }


def test_options_follow_the_config_types():
    out = coerce_options({"n.epochs": 15.0, "lr": 1.0, "reject": True, "domain_key": "batch"}, ScNym)
    assert out == {"n_epochs": 15, "lr": 1.0, "reject": True, "domain_key": "batch"}
    assert type(out["n_epochs"]) is int and type(out["lr"]) is float
    assert coerce_options([], ScNym) == {}  # an empty R list
    with pytest.raises(ValueError, match="must be named"):
        coerce_options([3], ScNym)


def test_matrix_payload_round_trip_and_error_and_warning_as_data(panc8_pair):
    ref, query = panc8_pair
    req = {
        "task": "annotate",
        "method": "scnym",
        "query": _payload(query),
        "reference": _payload(ref, ["cell_type"]),
        "labels_key": "cell_type",
        "seed": 0,
        "device": "cpu",
        "verbose": False,
        "options": {"n_epochs": 2.0},
    }
    out = run_from_r(req)
    assert out.get("error") is None, out.get("traceback")
    assert list(out["cells"]) == list(query.obs_names)
    assert out["probabilities"].shape == (query.n_obs, len(out["classes"]))
    np.testing.assert_allclose(out["probabilities"].max(axis=1), out["score"])
    assert json.loads(out["params_json"])["config"]["n_epochs"] == 2
    # the same request on the AnnData objects (the rpy2 path) gives the same answer
    out2 = run_from_r({**req, "query": query, "reference": ref})
    assert list(out2["labels"]) == list(out["labels"])
    # errors come back as data, with the Python type
    bad = run_from_r({**req, "labels_key": "nope"})
    assert "labels_key='nope' is not a column" in bad["error"] and bad["error_type"] == "ValueError"
    typo = run_from_r({**req, "options": {"n_epoch": 2}})
    assert typo["error_type"] == "TypeError" and "n_epoch" in typo["error"]


def test_train_request_passes_domain_key_to_fit(panc8_pair, tmp_path):
    """TrainScNym(..., domain_key = "batch"): the option goes to fit, not to the config."""
    ref, query = panc8_pair
    out = run_from_r(
        {
            "task": "train",
            "method": "scnym",
            "reference": _payload(ref, ["cell_type", "batch"]),
            "query": _payload(query, ["batch"]),
            "labels_key": "cell_type",
            "seed": 0,
            "device": "cpu",
            "verbose": False,
            "options": {"n_epochs": 2.0, "domain_key": "batch"},
            "path": str(tmp_path / "m"),
        }
    )
    assert out.get("error") is None, out.get("traceback")
    domains = json.loads(out["params_json"])["training"]["domains"]
    assert sorted(domains) == ["celseq", "celseq2", "fluidigmc1", "indrop", "smartseq2"]


def test_model_reference_warns_on_low_overlap(panc8_pair, tmp_path):
    ref, query = panc8_pair
    ScNym(n_epochs=2, seed=0, device="cpu", verbose=False).fit(ref).save(tmp_path / "m")
    q = query[:, :600].copy()
    out = run_from_r(
        {
            "task": "annotate",
            "method": "scnym",
            "query": q,
            "labels_key": "cell_type",
            "reference": {"kind": "model", "path": str(tmp_path / "m")},
            "device": "cpu",
            "verbose": False,
        }
    )
    assert out.get("error") is None
    assert any("Only 600 of 2000 model genes" in w for w in out["warnings"])
    wrong = run_from_r(
        {
            "task": "annotate",
            "method": "jind",
            "query": q,
            "reference": {"kind": "model", "path": str(tmp_path / "m")},
            "verbose": False,
        }
    )
    assert "holds a 'scnym' model" in wrong["error"]


def test_result_dicts_are_plain_arrays_and_json():
    ann = AnnotationResult(
        obs_names=pd.Index(["c1", "c2"]),
        classes=["T cell", "B_cell"],
        probabilities=np.array([[0.8, 0.2], [0.3, 0.7]]),
        labels=np.array(["T cell", "Unassigned"]),
        raw_labels=np.array(["T cell", "B_cell"]),
        confidence=np.array([0.8, 0.7]),
        embedding=None,
        method="x",
        rejection=True,
        params={"nan": float("nan"), "t": (1, 2)},
    )
    d = result_to_dict(ann)
    assert d["classes"].tolist() == ["T cell", "B_cell"] and d["rejection"] is True
    assert json.loads(d["params_json"]) == {"nan": None, "t": [1, 2]}
    cl = ClusteringResult(
        obs_names=pd.Index(["a", "b", "c"]),
        clusters=np.array([10, 2, 2]),
        confidence=np.array([1.0, 0.5, 0.5]),
        cell_types=np.array(["x", "y", "y"]),
        method="k",
    )
    d = result_to_dict(cl)
    assert d["cluster_levels"].tolist() == ["2", "10"]
    assert d["cell_types"].tolist() == ["x", "y", "y"] and d["extra"] is None


def test_registry_listing_for_r():
    out = run_from_r({"task": "methods"})
    assert "scnym" in out["name"].tolist()
    assert out["kind"][out["name"].tolist().index("scnym")] == "annotation"
    # one row per registered method, in equal-length arrays R turns into a data.frame
    fields = ("name", "kind", "reference", "maps_types", "extra_fields")
    assert len({len(out[f]) for f in fields}) == 1 and out["maps_types"].dtype == bool
    it = out["name"].tolist().index("itclust")
    assert (out["kind"][it], out["reference"][it], out["maps_types"][it]) == ("clustering", "required", True)
    assert out["extra_fields"][it] == "cell_score,raw_cell_types"
    assert out["extra_fields"][out["name"].tolist().index("cicl")] == ""


def test_r_package_ships_the_same_pins():
    assert (ROOT / "inst" / "python" / "constraints.txt").read_text() == (ROOT / "constraints.txt").read_text()
