"""Bad input, faults and data safety for the shared core (issue 8, Python side).

Each case either raises a ValueError that names the problem and the fix, warns, or
works correctly; the user's object is never half-written.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import pybridge
from pybridge import _io
from pybridge.data import gene_overlap, get_counts, get_labels

FAST = dict(n_epochs=5, min_epochs=1, patience=5, verbose=False)


def toy(n_cells=60, n_genes=120, seed=0, prefix="c"):
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(n_cells, n_genes)).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(X))
    a.obs_names = [f"{prefix}{i}" for i in range(n_cells)]
    a.var_names = [f"G{j}" for j in range(n_genes)]
    a.obs["cell_type"] = np.where(np.arange(n_cells) % 2 == 0, "A", "B")
    a.X[a.obs["cell_type"].to_numpy() == "A", :10] *= 5
    return a


# ---------------------------------------------------------------- shapes and names
def test_empty_objects():
    a = toy()
    with pytest.raises(ValueError, match="no cells"):
        get_counts(a[:0].copy())
    with pytest.raises(ValueError, match="no genes"):
        get_counts(a[:, :0].copy())


def test_one_cell_query_and_class_with_one_cell():
    ref = toy()
    ref.obs.loc[ref.obs_names[0], "cell_type"] = "Rare"  # a class with a single cell
    q = toy(seed=1, prefix="q")[:1].copy()
    res = pybridge.api.compute_scnym(q, ref, **FAST)
    assert res.labels.shape == (1,) and "Rare" in res.classes


def test_cell_names_colliding_between_reference_and_query():
    ref, q = toy(prefix="c"), toy(seed=1, prefix="c")  # identical cell names in both objects
    pybridge.scnym(q, ref, **FAST)
    assert q.obs["scnym"].notna().all()


@pytest.mark.parametrize(
    "labels, match",
    [
        ([None] * 60, "entirely NA"),
        (["", " "] * 30, "entirely NA or empty"),
        (["A", ""] * 30, "single class"),
        (["A"] * 60, "single class"),
    ],
)
def test_label_column_problems(labels, match):
    a = toy()
    a.obs["cell_type"] = labels
    with pytest.raises(ValueError, match=match):
        get_labels(a, "cell_type")


def test_numeric_and_factor_labels_and_partial_na():
    a = toy()
    a.obs["num"] = (np.arange(a.n_obs) % 2).astype(int)
    assert set(get_labels(a, "num")) == {"0", "1"}
    a.obs["fac"] = pd.Categorical(a.obs["cell_type"], categories=["A", "B", "never_used"])
    q = toy(seed=2, prefix="q")
    res = pybridge.api.compute_scnym(q, a, labels_key="fac", **FAST)
    assert res.classes == ["A", "B"]  # unused factor levels are not classes
    a.obs.loc[a.obs_names[:5], "cell_type"] = None
    with pytest.warns(UserWarning, match="no label"):
        pybridge.api.compute_scnym(q, a, **FAST)
    a.obs.loc[a.obs_names[:5], "cell_type"] = ""  # a blank label, as a CSV file writes a missing value
    with pytest.warns(UserWarning, match=r"5 reference cells have no label \(NA or empty\)"):
        res = pybridge.api.compute_scnym(q, a, **FAST)
    assert res.classes == ["A", "B"]


def test_gene_overlap_errors_name_the_cause():
    human = pd.Index([f"GENE{i}" for i in range(200)])
    mouse = pd.Index([f"Gene{i}" for i in range(200)])
    with pytest.raises(ValueError, match="case is ignored"):
        gene_overlap(human, mouse)
    ens = pd.Index([f"ENSG{i:011d}" for i in range(200)])
    with pytest.raises(ValueError, match="Ensembl IDs"):
        gene_overlap(human, ens)
    with pytest.raises(ValueError, match=r"shares only 15 of the 200"):
        gene_overlap(human, human[:15])


# --------------------------------------------------------------------------- values
def test_values():
    a = toy()
    a.X = a.X.astype(np.float32)
    b = a.copy()
    b.X.data[3] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        get_counts(b)
    logged = a.copy()
    logged.X = sp.csr_matrix(np.log1p(a.X.toarray()) + 0.01 * (a.X.toarray() > 0))
    with pytest.warns(UserWarning, match="looks log-transformed.*Pass the counts layer if you have it"):
        get_counts(logged)
    logged.layers["raw_counts"] = a.X.copy()  # the warning names a counts-like layer when there is one
    with pytest.warns(UserWarning, match="The query has a layer 'raw_counts': if it holds the raw counts"):
        get_counts(logged)
    dense = a.copy()
    dense.X = a.X.toarray()  # dense input is accepted and converted once
    assert sp.isspmatrix_csr(get_counts(dense))


def test_all_zero_cells_and_genes_work_with_a_warning():
    ref, q = toy(), toy(seed=1, prefix="q")
    X = q.X.toarray()
    X[0, :] = 0
    X[:, 5] = 0
    q.X = sp.csr_matrix(X)
    with pytest.warns(UserWarning, match="no counts"):
        res = pybridge.api.compute_scnym(q, ref, **FAST)
    np.testing.assert_allclose(res.probabilities.sum(1), 1, atol=1e-5)


# ----------------------------------------------------------------------- metadata
def test_label_names_with_spaces_slashes_unicode_roundtrip_h5ad(tmp_path):
    ref, q = toy(), toy(seed=1, prefix="q")
    ref.obs["cell_type"] = np.where(ref.obs["cell_type"] == "A", "CD4+/CD8+ T cell", "Zelltyp ä β")
    pybridge.scnym(q, ref, reject=True, **FAST)
    q.write_h5ad(tmp_path / "q.h5ad")
    back = ad.read_h5ad(tmp_path / "q.h5ad")
    assert set(back.obs["scnym"].cat.categories) == {"CD4+/CD8+ T cell", "Zelltyp ä β", "Unassigned"}
    assert list(back.uns["scnym"]["classes"]) == ["CD4+/CD8+ T cell", "Zelltyp ä β"]


def test_rerun_replaces_only_own_output_and_says_so():
    ref, q = toy(), toy(seed=1, prefix="q")
    q.obs["keep_me"] = 1.5
    pybridge.scnym(q, ref, **FAST)
    with pytest.warns(UserWarning, match="Replacing the previous scnym output"):
        pybridge.scnym(q, ref, seed=1, **FAST)
    assert (q.obs["keep_me"] == 1.5).all()
    q.obs["mine"] = "user data"
    with pytest.raises(ValueError, match="already exists and was written by something other than pybridge"):
        pybridge.scnym(q, ref, key_added="mine", **FAST)
    assert (q.obs["mine"] == "user data").all()


def test_copy_leaves_input_untouched():
    ref, q = toy(), toy(seed=1, prefix="q")
    before = q.copy()
    out = pybridge.scnym(q, ref, copy=True, **FAST)
    assert "scnym" in out.obs and "scnym" not in q.obs
    assert q.obs.equals(before.obs) and not q.obsm and not q.uns


def test_interrupt_mid_training_leaves_object_unchanged(monkeypatch):
    ref, q = toy(), toy(seed=1, prefix="q")
    before_obs = q.obs.copy()
    calls = {"n": 0}
    original = pybridge.ScNym._step

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pybridge.ScNym, "_step", flaky)
    with pytest.raises(KeyboardInterrupt):
        pybridge.scnym(q, ref, **FAST)
    pd.testing.assert_frame_equal(q.obs, before_obs)
    assert not q.obsm and not q.uns


# ------------------------------------------------------------------- model files
@pytest.fixture()
def saved(tmp_path):
    ref = toy()
    model = pybridge.ScNym(**FAST).fit(ref)
    return model.save(tmp_path / "m")


def test_crafted_pickle_is_never_loaded(saved, tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle executed')",))

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.pkl").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="never loads pickled files"):
        pybridge.ScNym.load(evil)
    # a pickle placed next to a valid model is ignored, and the model still loads
    (saved / "extra.pkl").write_bytes(pickle.dumps(Boom()))
    assert pybridge.ScNym.load(saved).classes_ == ["A", "B"]


def test_corrupt_foreign_and_future_model_dirs(saved):
    meta = json.loads((saved / _io.META).read_text())
    (saved / _io.META).write_text(json.dumps({**meta, "method": "jind"}))
    with pytest.raises(ValueError, match="holds a 'jind' model, not 'scnym'"):
        pybridge.ScNym.load(saved)
    (saved / _io.META).write_text(json.dumps({**meta, "format_version": 99, "pybridge_version": "9.0"}))
    with pytest.raises(ValueError, match="Upgrade pybridge"):
        pybridge.ScNym.load(saved)
    (saved / _io.META).write_text(json.dumps(meta))
    (saved / _io.WEIGHTS).write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        pybridge.ScNym.load(saved)
    (saved / _io.META).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        pybridge.ScNym.load(saved)


def test_cuda_requested_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pybridge.ScNym(device="cuda")
