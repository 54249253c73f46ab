"""The bad-input matrix, part 2: estimators (fit / predict / save / load), model directories and the CLI,
for every method in the registry (tiny data and settings from input_matrix_helpers.py).
"""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from input_matrix_helpers import (
    METHODS,
    TINY,
    TRAINING_MODULES,
    TrainingStarted,  # noqa: F401
    interrupt_training,
    is_annotation,
    needs_reference,
    toy,
)

import pybridge
from pybridge import _io
from pybridge.cli import main
from pybridge.models._registry import get_method

#: run by the CLI as ``annotate`` (a labelled reference is required: scNym, JIND and ItClust) or ``cluster``
ANNOTATION = [m for m in METHODS if needs_reference(m)]
CLUSTERING = [m for m in METHODS if not needs_reference(m)]


def estimator(method, **kw):
    opts = {**TINY[method], "device": "cpu", "verbose": False, **kw}
    if method == "nmf_transfer":
        opts.pop("n_clusters", None)  # a predict() argument there
    return get_method(method).estimator(**opts)


def fit(method, ref, q):
    model = estimator(method)
    if method == "cicl":
        return model.fit(q)
    if method == "nmf_transfer":
        return model.fit(ref)
    return model.fit(ref, query=q)


def predict(method, model, q):
    return model.predict(q, n_clusters=3) if method == "nmf_transfer" else model.predict(q)


def outputs(method, result):
    return np.asarray(result.labels if is_annotation(method) else result.clusters, dtype=str)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One fitted, saved model per method (and its predictions on the query)."""
    root = tmp_path_factory.mktemp("models")
    ref, q = toy(), toy(seed=1, prefix="q")
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in METHODS:
            model = fit(m, ref, q)
            model.save(root / m)
            out[m] = (root / m, outputs(m, predict(m, model, q)))
    return out


def copy_model(saved, method, tmp_path) -> Path:
    dst = tmp_path / f"{method}_copy"
    shutil.copytree(saved[method][0], dst)
    return dst


def load(method, path, **kw):
    return get_method(method).estimator.load(path, verbose=False, **kw)


# ============================================================================ estimators
@pytest.mark.parametrize("method", METHODS)
def test_predict_and_save_before_fit_say_so(method, tmp_path):
    model = estimator(method)
    with pytest.raises(RuntimeError, match="not fitted yet"):
        predict(method, model, toy())
    with pytest.raises(RuntimeError, match="not fitted yet"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("method", METHODS)
def test_save_load_predict_gives_the_same_output_without_warnings(method, saved):
    path, expected = saved[method]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # same version: no version warning
        model = load(method, path, device="cpu")
    got = outputs(method, predict(method, model, toy(seed=1, prefix="q")))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("method", METHODS)
def test_save_and_load_expand_the_home_folder_and_refuse_a_file(method, saved, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    model = load(method, saved[method][0], device="cpu")
    model.save("~/models/m")
    assert (tmp_path / "models" / "m" / "pybridge.json").is_file() and not (tmp_path / "~").exists()
    again = load(method, "~/models/m", device="cpu")
    np.testing.assert_array_equal(outputs(method, predict(method, again, toy(seed=1, prefix="q"))), saved[method][1])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="it is a file; a model is saved as a folder"):
        model.save(tmp_path / "a_file")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "case, match",
    [
        ("duplicated_genes", "duplicated gene names"),
        ("no_shared_genes", "shares only 0 of the"),
        ("nan", "NaN or infinite"),
        ("empty", "has no cells"),
    ],
)
def test_predict_refuses_bad_queries(method, case, match, saved):
    model = load(method, saved[method][0], device="cpu")
    q = toy(seed=2, prefix="z")
    if case == "duplicated_genes":
        q.var_names = ["G0", *q.var_names[1:-1], "G0"]
    elif case == "no_shared_genes":
        q.var_names = [f"X{i}" for i in range(q.n_vars)]
    elif case == "nan":
        q.X = q.X.toarray()
        q.X[1, 1] = np.nan
    else:
        q = q[:0].copy()
    with pytest.raises(ValueError, match=match):
        predict(method, model, q)


@pytest.mark.parametrize("method", METHODS)
def test_cuda_without_gpu_for_estimators_and_load(method, saved):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        estimator(method, device="cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        load(method, saved[method][0], device="cuda")


# ============================================================================ model directories
class _Marker:
    """Unpickling this creates a file: proof that a pickle was (not) executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _meta(path):
    return json.loads((path / _io.META).read_text())


def _write_meta(path, meta):
    (path / _io.META).write_text(json.dumps(meta))


FAULTS = {
    "does_not_exist": "not a pybridge model directory \\(it does not exist",
    "pickle_only": "never loads pickled files",
    "foreign_method": "holds a 'other' model, not",
    "future_format": "format 99.*Upgrade pybridge",
    "no_format_version": "no valid format_version",
    "incomplete_meta": "is incomplete \\(no genes\\)",
    "meta_not_json": "is corrupt",
    "meta_not_an_object": "does not hold a pybridge model",
    "truncated_weights": "corrupt or truncated",
    "weights_of_another_model": "does not match its pybridge.json",
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_faulty_model_directories_are_refused(method, fault, saved, tmp_path):
    path = copy_model(saved, method, tmp_path)
    marker = tmp_path / "pickle_ran"
    meta = _meta(path)
    if fault == "does_not_exist":
        path = tmp_path / "nowhere"
    elif fault == "pickle_only":
        path = tmp_path / "pickles"
        path.mkdir()
        (path / "model.pkl").write_bytes(pickle.dumps(_Marker(marker)))
        (path / "model.pt").write_bytes(pickle.dumps(_Marker(marker)))
    elif fault == "foreign_method":
        _write_meta(path, {**meta, "method": "other"})
    elif fault == "future_format":
        _write_meta(path, {**meta, "format_version": 99, "pybridge_version": "9.0"})
    elif fault == "no_format_version":
        _write_meta(path, {k: v for k, v in meta.items() if k != "format_version"})
    elif fault == "incomplete_meta":
        _write_meta(path, {k: v for k, v in meta.items() if k != "genes"})
    elif fault == "meta_not_json":
        (path / _io.META).write_text("{not json")
    elif fault == "meta_not_an_object":
        (path / _io.META).write_text("[1, 2]")
    elif fault == "truncated_weights":
        data = (path / _io.WEIGHTS).read_bytes()
        (path / _io.WEIGHTS).write_bytes(data[: len(data) // 2])
    elif fault == "weights_of_another_model":
        other = "scnym" if method != "scnym" else "cicl"
        shutil.copy(saved[other][0] / _io.WEIGHTS, path / _io.WEIGHTS)
    with pytest.raises(ValueError, match=FAULTS[fault]):
        load(method, path, device="cpu")
    assert not marker.exists()


EDITED_SIZES = {"scnym": ("n_hidden", 64), "jind": ("n_latent", 32), "cicl": ("ffn_dim", 64)}


@pytest.mark.parametrize("method", sorted(EDITED_SIZES))
def test_config_edited_to_other_layer_sizes_is_a_clear_error(method, saved, tmp_path):
    path = copy_model(saved, method, tmp_path)
    meta = _meta(path)
    key, value = EDITED_SIZES[method]
    assert key in meta["config"] and meta["config"][key] != value
    _write_meta(path, {**meta, "config": {**meta["config"], key: value}})
    with pytest.raises(ValueError, match="do not fit the network that its config describes"):
        load(method, path, device="cpu")


@pytest.mark.parametrize("method", METHODS)
def test_pickle_next_to_a_valid_model_is_never_read(method, saved, tmp_path):
    path = copy_model(saved, method, tmp_path)
    marker = tmp_path / "pickle_ran"
    (path / "extra.pkl").write_bytes(pickle.dumps(_Marker(marker)))
    (path / "optimizer.pt").write_bytes(pickle.dumps(_Marker(marker)))
    load(method, path, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("version", ["0.0.1", "99.0.0"])
def test_model_from_another_version_in_the_same_format_loads_with_a_warning(method, version, saved, tmp_path):
    path = copy_model(saved, method, tmp_path)
    _write_meta(path, {**_meta(path), "pybridge_version": version})
    with pytest.warns(UserWarning, match=f"written by pybridge {version}, this is pybridge {pybridge.__version__}"):
        model = load(method, path, device="cpu")
    np.testing.assert_array_equal(outputs(method, predict(method, model, toy(seed=1, prefix="q"))), saved[method][1])


def test_models_written_before_the_tensor_manifest_still_load(saved, tmp_path):
    path = copy_model(saved, "scnym", tmp_path)
    _write_meta(path, {k: v for k, v in _meta(path).items() if k != "tensors"})
    model = load("scnym", path, device="cpu")
    np.testing.assert_array_equal(outputs("scnym", predict("scnym", model, toy(seed=1, prefix="q"))), saved["scnym"][1])


# ============================================================================ CLI
def _sets(method, drop=()):
    out = []
    for k, v in TINY[method].items():
        if k in drop:
            continue
        out += ["--set", f"{k}={json.dumps(list(v) if isinstance(v, tuple) else v)}"]
    return out


@pytest.fixture()
def files(tmp_path):
    ref, q = toy(), toy(seed=1, prefix="q")
    ref.write_h5ad(tmp_path / "ref.h5ad")
    q.write_h5ad(tmp_path / "q.h5ad")
    dup = q.copy()
    dup.var_names = ["G0", *q.var_names[1:-1], "G0"]
    dup.write_h5ad(tmp_path / "dup.h5ad")
    taken = q.copy()
    for m in METHODS:
        taken.obs[m] = "user data"
    taken.write_h5ad(tmp_path / "taken.h5ad")
    (tmp_path / "notes.txt").write_text("not an h5ad file")
    return tmp_path


def cli_args(command, method, d, query="q.h5ad", out="out.h5ad", extra=()):
    if command == "cluster":
        args = ["cluster", "--method", method, "--input", str(d / query)]
        if method == "nmf_transfer":
            args += ["--reference", str(d / "ref.h5ad"), "--n-clusters", "3"]
        args += _sets(method, drop=("n_clusters",))
    else:
        args = ["annotate", "--method", method, "--reference", str(d / "ref.h5ad"), "--query", str(d / query)]
        args += _sets(method)
    return [*args, "--out", str(d / out), "--device", "cpu", "--quiet", *extra]


def entry_points():
    return [("annotate", m) for m in ANNOTATION] + [("cluster", m) for m in CLUSTERING]


@pytest.mark.parametrize("command, method", entry_points())
def test_cli_runs_each_method(command, method, files):
    assert main(cli_args(command, method, files)) == 0
    import anndata as ad

    out = ad.read_h5ad(files / "out.h5ad")
    assert out.obs[method].notna().all() and out.uns[method]["method"] == method
    assert not list(files.glob(".*partial*"))


@pytest.mark.parametrize("command, method", entry_points())
@pytest.mark.parametrize(
    "case, match",
    [
        ("duplicated_genes", "duplicated gene names"),
        ("cuda", "no CUDA GPU"),
        ("key_taken", "already exists and was written by something other than pybridge"),
        ("not_h5ad", "could not read"),
        ("missing_file", "does not exist"),
        ("unknown_option", "Unknown .*Config option"),
        ("out_folder_missing", "folder .* does not exist"),
        ("rds_out_from_h5ad", "--out \\*.rds needs the query to be an .rds file"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_before_training(command, method, case, match, files, capsys, monkeypatch):
    import torch

    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("a GPU is present")

    def progress(*args, **kwargs):
        raise TrainingStarted("training started before the input was validated")

    for mod in TRAINING_MODULES:
        monkeypatch.setattr(f"{mod}.progress", progress)
    query = {
        "duplicated_genes": "dup.h5ad",
        "key_taken": "taken.h5ad",
        "not_h5ad": "notes.txt",
        "missing_file": "nothing.h5ad",
    }.get(case, "q.h5ad")
    out = {"out_folder_missing": "no/such/dir/out.h5ad", "rds_out_from_h5ad": "out.rds"}.get(case, "out.h5ad")
    extra = {"cuda": ["--device", "cuda"], "unknown_option": ["--set", "n_epoch=3"]}.get(case, [])
    capsys.readouterr()
    assert main(cli_args(command, method, files, query=query, out=out, extra=extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pybridge: error:"), err
    assert __import__("re").search(match, err[0]), err[0]
    assert not (files / "out.h5ad").exists()


def _cli_train_then_predict(files, method, data, sets):
    """``pybridge train`` then ``pybridge predict`` on the query; the model directory."""
    model_dir, common = files / "model", ["--device", "cpu", "--quiet"]
    assert main(["train", "--method", method, *data, "--out", str(model_dir), *common, *sets]) == 0
    predict = ["--model", str(model_dir), "--query", str(files / "q.h5ad"), "--csv", str(files / "p.csv")]
    assert main(["predict", *predict, *common]) == 0
    return model_dir


@pytest.mark.parametrize("method", ANNOTATION)
def test_cli_train_then_predict(method, files):
    data = ["--reference", str(files / "ref.h5ad"), "--query", str(files / "q.h5ad")]
    _cli_train_then_predict(files, method, data, _sets(method))
    assert (files / "p.csv").exists()


@pytest.mark.parametrize("method", CLUSTERING)
def test_cli_train_then_predict_clusterers(method, files):
    """Any method's model directory works with ``pybridge predict``: a clusterer's clusters the query."""
    import anndata as ad
    import pandas as pd

    data = ["--query", str(files / "q.h5ad")] if method == "cicl" else ["--reference", str(files / "ref.h5ad")]
    sets = _sets(method, drop=("n_clusters",) if method == "nmf_transfer" else ())
    model_dir = _cli_train_then_predict(files, method, data, sets)
    table = pd.read_csv(files / "p.csv", index_col=0)
    q = ad.read_h5ad(files / "q.h5ad")
    assert list(table.index) == list(q.obs_names) and "cluster" in table
    expected = get_method(method).apply(pybridge.load(model_dir, device="cpu", verbose=False), q)
    assert (table["cluster"].astype(str).to_numpy() == np.asarray(expected.clusters).astype(str)).all()


def test_cli_train_says_what_each_method_learns_from(files, capsys):
    args = ["--out", str(files / "m"), "--device", "cpu", "--quiet"]
    assert main(["train", "--method", "cicl", "--reference", str(files / "ref.h5ad"), *args]) == 2
    assert "unsupervised and takes no reference" in capsys.readouterr().err
    assert main(["train", "--method", "itclust", "--reference", str(files / "ref.h5ad"), *args]) == 2
    assert "reference and the query together" in capsys.readouterr().err
    assert main(["train", "--method", "scnym", *args]) == 2
    assert "trains on a labelled reference" in capsys.readouterr().err


@pytest.mark.parametrize(
    "fault, match",
    [
        ("pickle_dir", "never loads pickled files"),
        ("future_format", "Upgrade pybridge"),
        ("not_a_dir", "not a pybridge model directory"),
    ],
)
def test_cli_predict_refuses_faulty_model_dirs(fault, match, saved, files, capsys):
    path = copy_model(saved, "scnym", files)
    marker = files / "pickle_ran"
    if fault == "pickle_dir":
        path = files / "pickles"
        path.mkdir()
        (path / "model.pkl").write_bytes(pickle.dumps(_Marker(marker)))
    elif fault == "future_format":
        _write_meta(path, {**_meta(path), "format_version": 99})
    else:
        path = files / "q.h5ad"
    capsys.readouterr()
    assert main(["predict", "--model", str(path), "--query", str(files / "q.h5ad"), "--quiet"]) == 2
    assert match in capsys.readouterr().err
    assert not marker.exists()


def test_cli_train_refuses_an_out_path_that_is_a_file(files, capsys, monkeypatch):
    assert main(["train", "--reference", str(files / "ref.h5ad"), "--out", str(files / "notes.txt"), "--quiet"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("command, method", entry_points())
def test_cli_interrupt_exits_130_and_writes_nothing(command, method, files, capsys, monkeypatch):
    interrupt_training(monkeypatch)
    extra = ["--set", "nmf_refine=true"] if method == "nmf_transfer" else []
    capsys.readouterr()
    assert main(cli_args(command, method, files, extra=extra)) == 130
    assert "interrupted; no output was written" in capsys.readouterr().err
    assert not (files / "out.h5ad").exists() and not list(files.glob(".*partial*"))
