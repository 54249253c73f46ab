"""The bad-input matrix (issue 8): every case against every method's public function.

Each case is run through ``pybridge.<method>(...)`` with tiny synthetic data and the
smallest settings each method allows (seconds for the whole file). Expected outcomes:

* ``error``: a ValueError whose message names the problem (and the fix). These run
  under the ``no_training`` guard, which makes any training loop raise
  :class:`TrainingStarted` (a BaseException, so no ``except Exception`` hides it): the
  check must fire *before* training, and the object must be left untouched.
* ``warn``: a UserWarning naming the problem, and a complete result.
* ``ok``: documented behaviour, checked by a property of the result.
* ``n.a.``: the case does not apply (e.g. reference cases for CICL, which takes none).

docs/input-checks.md is the same matrix in prose; its rows name these test ids.
The estimators, the model files and the CLI are in methods/test_input_matrix_models.py; the shared
tiny data, settings and guards in input_matrix_helpers.py.
"""

from __future__ import annotations

import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from input_matrix_helpers import (
    METHODS,
    TINY,
    TRAINING_MODULES,
    TrainingStarted,
    assert_unchanged,  # noqa: F401
    interrupt_training,
    is_annotation,
    needs_reference,
    no_training,  # noqa: F401 (a fixture, used by name)
    snapshot,
    takes_reference,
    toy,
)

import pybridge
from pybridge.models._registry import get_method


def run(method: str, query, reference=None, **kw):
    """The public function of ``method`` with its tiny settings (CICL gets no reference)."""
    opts = {**TINY[method], "device": "cpu", "verbose": False, **kw}
    fn = getattr(pybridge, method)
    if method == "cicl":
        return fn(query, **opts)
    if needs_reference(method):
        return fn(query, reference, **opts)
    return fn(query, reference=reference, **opts)


def labels_written(method: str, a: ad.AnnData) -> pd.Series:
    """The label (annotation) or mapped type (clustering) column a method wrote under its default key."""
    if is_annotation(method):
        return a.obs[method]
    return a.obs[f"{method}_cell_type"]


def assert_complete(method: str, a: ad.AnnData) -> None:
    assert method in a.obs and a.obs[method].notna().all()
    conf = a.obs[f"{method}_confidence"].to_numpy()
    assert np.all(np.isfinite(conf)) and np.all((conf >= 0) & (conf <= 1 + 1e-6))
    assert a.uns[method]["method"] == method


def with_X(a: ad.AnnData, X) -> ad.AnnData:
    a = a.copy()
    a.X = X
    return a


def set_cell(a, value, where=(0, 0)):
    X = a.X.toarray()
    X[where] = value
    return with_X(a, sp.csr_matrix(X))


# ============================================================================ the case table
# name -> (build(ref, query) -> (query, reference), {method: expectation}, default expectation)
# expectation: ("error", regex) | ("warn", regex) | ("ok", None) | ("n.a.", reason)
NO_REF = ("n.a.", "CICL takes no reference")


def _renamed(a, names):
    a = a.copy()
    a.var_names = names
    return a


def _to_layer(a):
    a = a.copy()
    a.layers["counts"] = a.X.copy()
    a.X = None
    return a


def _relabel(a, values):
    a = a.copy()
    a.obs["cell_type"] = values
    return a


CASES = {
    # ---- input shape
    "empty_query_cells": (lambda r, q: (q[:0].copy(), r), {}, ("error", "has no cells")),
    "empty_query_genes": (lambda r, q: (q[:, :0].copy(), r), {}, ("error", "has no genes")),
    "empty_reference": (lambda r, q: (q, r[:0].copy()), {"cicl": NO_REF}, ("error", "reference has no cells")),
    "one_cell_query": (
        lambda r, q: (q[:1].copy(), r),
        {
            "scnym": ("ok", None),
            "linear": ("ok", None),
            "jind": ("error", "has 1 cell.*align=False, jind_plus=False"),
            "itclust": ("error", "has only 1 usable cell.*classifier instead"),
            "cicl": ("error", "at least 10 cells"),
            "nmf_transfer": ("error", "it needs at least 3"),
        },
        None,
    ),
    "one_gene_query": (
        lambda r, q: (q[:, :1].copy(), r),
        {
            "cicl": ("error", "Only 1 genes vary"),
        },
        ("error", "shares only 1 of the 80"),
    ),
    "reference_one_class": (lambda r, q: (q, _relabel(r, "A")), {"cicl": NO_REF}, ("error", "single class")),
    "class_with_one_cell": (
        lambda r, q: (q, _relabel(r, ["Rare"] + list(r.obs["cell_type"].astype(str)[1:]))),
        {"cicl": NO_REF},
        ("ok", None),
    ),
    "no_shared_genes": (
        lambda r, q: (_renamed(q, [f"X{i}" for i in range(q.n_vars)]), r),
        {"cicl": NO_REF},
        ("error", "shares only 0 of the 80"),
    ),
    "overlap_below_10pct": (
        lambda r, q: (_renamed(q, [f"G{i}" if i < 5 else f"X{i}" for i in range(q.n_vars)]), r),
        {"cicl": NO_REF},
        ("error", r"shares only 5 of the 80 .*\(6.2%\)"),
    ),
    "overlap_75pct": (
        lambda r, q: (_renamed(q, [f"G{i}" if i < 60 else f"X{i}" for i in range(q.n_vars)]), r),
        {
            "cicl": NO_REF,
            "scnym": ("ok", None),  # documented: scNym trains on the shared genes (overlap in uns), no warning
            "linear": ("ok", None),  # as scNym
            "itclust": ("warn", "Only 60 of the 80 target HVGs"),
        },
        ("warn", "Only 60 of 80 model genes \\(75.0%\\) are present in the query"),
    ),
    "gene_case_differs": (
        lambda r, q: (_renamed(q, [f"g{i}" for i in range(q.n_vars)]), r),
        {
            "cicl": NO_REF,
            "itclust": ("ok", None),  # documented: ItClust matches upper-cased symbols (case_insensitive_genes=True)
        },
        ("error", "match when case is ignored"),
    ),
    "ensembl_vs_symbols": (
        lambda r, q: (_renamed(q, [f"ENSG{i:011d}" for i in range(q.n_vars)]), r),
        {"cicl": NO_REF},
        ("error", "the query uses Ensembl IDs but the reference/model uses gene symbols"),
    ),
    "duplicated_genes_query": (
        lambda r, q: (_renamed(q, ["G0", *q.var_names[1:-1], "G0"]), r),
        {},
        ("error", r"1 duplicated gene names \('G0'\).*var_names_make_unique"),
    ),
    "duplicated_genes_reference": (
        lambda r, q: (q, _renamed(r, ["G0", *r.var_names[1:-1], "G0"])),
        {"cicl": NO_REF},
        ("error", "reference has 1 duplicated gene names"),
    ),
    "duplicated_cells_query": (
        lambda r, q: (q[[0, 0, *range(2, q.n_obs)]].copy(), r),
        {},
        ("error", "duplicated cell names.*obs_names_make_unique"),
    ),
    "duplicated_cells_reference": (
        lambda r, q: (q, r[[0, 0, *range(2, r.n_obs)]].copy()),
        {"cicl": NO_REF},
        ("error", "reference has 1 duplicated cell names"),
    ),
    "cell_names_collide": (lambda r, q: (q, r), {"cicl": NO_REF}, ("ok", None)),  # see the builder below
    # ---- values
    "nan_in_query": (lambda r, q: (set_cell(q, np.nan), r), {}, ("error", "1 NaN or infinite values")),
    "inf_in_query": (lambda r, q: (set_cell(q, np.inf), r), {}, ("error", "1 NaN or infinite values")),
    "negative_in_query": (lambda r, q: (set_cell(q, -1.0), r), {}, ("error", "negative values.*scale.data")),
    "negative_in_reference": (
        lambda r, q: (q, set_cell(r, -1.0)),
        {"cicl": NO_REF},
        ("error", "reference.X contains negative values"),
    ),
    "missing_layer": (lambda r, q: (q, r), {}, ("error", "Layer 'counts' is not in the")),
    "log_normalised_as_counts": (
        lambda r, q: (with_X(q, sp.csr_matrix(np.log1p(q.X.toarray()))), r),
        {},
        ("warn", "looks log-transformed"),
    ),
    "non_integer_counts": (lambda r, q: (with_X(q, q.X * 1.37), r), {}, ("ok", None)),
    "all_zero_cell_and_gene": (
        lambda r, q: (set_cell(set_cell(q, 0.0, (slice(None), 3)), 0.0, (0, slice(None))), r),
        {"nmf_transfer": ("ok", None)},
        ("warn", "1 cells have no counts"),
    ),
    "dense_integer_matrix": (lambda r, q: (with_X(q, q.X.toarray().astype(np.int64)), r), {}, ("ok", None)),
    "csc_matrix": (lambda r, q: (with_X(q, sp.csc_matrix(q.X)), r), {}, ("ok", None)),
    "query_all_zero": (
        lambda r, q: (with_X(q, sp.csr_matrix(q.shape, dtype=np.float32)), r),
        {},
        ("error", "holds no counts \\(every value is 0\\)"),
    ),
    "reference_all_zero": (
        lambda r, q: (q, with_X(r, sp.csr_matrix(r.shape, dtype=np.float32))),
        {"cicl": NO_REF},
        ("error", "reference.X holds no counts"),
    ),
    "X_none": (
        lambda r, q: (with_X(q, None), r),
        {},
        ("error", "X is empty \\(None\\); put raw counts in .X or name a layer"),
    ),
    "counts_in_a_layer": (lambda r, q: (_to_layer(q), r), {}, ("ok", None)),
    # ---- metadata
    "labels_column_missing": (
        lambda r, q: (q, r[:, :].copy()),
        {"cicl": NO_REF},
        ("error", "labels_key='cell_type' is not a column.*available columns"),
    ),
    "labels_all_na": (
        lambda r, q: (q, _relabel(r, pd.Categorical([None] * r.n_obs, categories=["A"]))),
        {"cicl": NO_REF},
        ("error", "entirely NA"),
    ),
    "labels_partly_na": (
        lambda r, q: (q, _relabel(r, [None] * 5 + list(r.obs["cell_type"].astype(str)[5:]))),
        {"cicl": NO_REF},
        ("warn", "5 reference cells have no label"),
    ),
    "labels_numeric": (
        lambda r, q: (q, _relabel(r, r.obs["cell_type"].cat.codes.astype(int))),
        {"cicl": NO_REF},
        ("ok", None),
    ),
    "labels_factor_unused_levels": (
        lambda r, q: (q, _relabel(r, r.obs["cell_type"].cat.add_categories(["unused"]))),
        {"cicl": NO_REF},
        ("ok", None),
    ),
    "label_named_Unassigned": (
        lambda r, q: (q, _relabel(r, ["Unassigned", *r.obs["cell_type"].astype(str)[1:]])),
        {"cicl": NO_REF},
        ("warn", "has a class named 'Unassigned'"),
    ),
    "labels_differ_in_case_or_spaces": (
        lambda r, q: (q, _relabel(r, [*["t cell ", "T cell"] * 2, *r.obs["cell_type"].astype(str)[4:]])),
        {"cicl": NO_REF},
        ("warn", "differ only in case or spacing \\('t cell ' vs 'T cell'\\)"),
    ),
    "labels_spaces_slashes_unicode": (
        lambda r, q: (
            q,
            _relabel(r, r.obs["cell_type"].cat.rename_categories(["T cell / CD4+", "Zelltyp ä β", "x_y"])),
        ),
        {"cicl": NO_REF},
        ("ok", None),
    ),
}


def build(case: str, method: str):
    ref, query = toy(), toy(seed=1, prefix="q")
    if case == "cell_names_collide":
        query.obs_names = ref.obs_names  # the same names in both objects
    if case == "labels_column_missing":
        del ref.obs["cell_type"]
    query, ref = CASES[case][0](ref, query)
    kw = {"layer": "counts"} if case in {"missing_layer", "counts_in_a_layer"} else {}
    return query, ref, kw


def expectation(case: str, method: str):
    _, overrides, default = CASES[case]
    return overrides.get(method, default)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", list(CASES))
def test_case(case, method, monkeypatch):
    kind, what = expectation(case, method)
    if kind == "n.a.":
        pytest.skip(f"n.a.: {what}")
    query, ref, kw = build(case, method)
    before = snapshot(query)
    if kind == "error":

        def progress(*args, **kwargs):
            raise TrainingStarted("training started before the input was validated")

        for mod in TRAINING_MODULES:
            monkeypatch.setattr(f"{mod}.progress", progress)
        with pytest.raises(ValueError, match=what):
            run(method, query, ref, **kw)
        assert_unchanged(query, before)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(method, query, ref, **kw)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert_complete(method, query)
    if kind == "warn":
        assert any(re.search(what, m) for m in messages), messages
    # properties of the documented behaviours
    if case == "non_integer_counts":
        assert not any("log-transformed" in m for m in messages)
    if case in {
        "labels_numeric",
        "labels_factor_unused_levels",
        "labels_spaces_slashes_unicode",
        "class_with_one_cell",
    }:
        expected = {
            "labels_numeric": {"0", "1", "2"},
            "labels_factor_unused_levels": {"A", "B", "C"},
            "labels_spaces_slashes_unicode": {"T cell / CD4+", "Zelltyp ä β", "x_y"},
            "class_with_one_cell": {"A", "B", "C", "Rare"},
        }[case]
        classes = set(query.uns[method].get("classes", query.uns[method].get("source_classes", [])))
        if method == "itclust":
            classes = set(query.uns[method]["source_types"])
        assert classes == expected, classes
        written = set(labels_written(method, query).astype(str)) - {"Unassigned"}
        assert written <= expected
    if case == "overlap_75pct" and method in ("scnym", "linear"):  # trained on the 60 shared genes, says so in uns
        assert query.uns[method]["training"]["reference_gene_overlap"]["n_shared"] == 60
        assert query.uns[method]["gene_overlap"]["n_model_genes"] == 60
    if case == "cell_names_collide":
        assert list(query.obs_names) == list(ref.obs_names)  # nothing was renamed


# ============================================================================ output keys and re-runs
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.usefixtures("no_training")
def test_foreign_column_under_the_key_is_refused_before_training(method):
    ref, q = toy(), toy(seed=1, prefix="q")
    q.obs[method] = "user data"
    before = snapshot(q)
    with pytest.raises(ValueError, match=f"obs\\['{method}'\\] already exists and was written by something other"):
        run(method, q, ref)
    assert_unchanged(q, before)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.usefixtures("no_training")
def test_an_empty_or_non_text_key_added_is_refused_before_training(method):
    ref, q = toy(), toy(seed=1, prefix="q")
    before = snapshot(q)
    for key in ("", "  ", 3):
        with pytest.raises(ValueError, match="key_added must be a non-empty string"):
            run(method, q, ref, key_added=key)
    assert_unchanged(q, before)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.usefixtures("no_training")
def test_something_other_than_anndata_is_refused_with_how_to_make_one(method):
    """A list of references, a path, a DataFrame or a bare matrix: a TypeError (also a ValueError) with a hint,
    not an AttributeError from deep inside; the estimators refuse them the same way."""
    ref, q = toy(), toy(seed=1, prefix="q")
    before = snapshot(q)
    what = "data" if method == "cicl" else "query"
    bad_query = [
        (q.to_df(), r"wrap it: anndata\.AnnData\(df\)"),
        ("q.h5ad", "read the file first"),
        (q.X, "wrap it with its names"),
    ]
    for obj, hint in bad_query:
        with pytest.raises(TypeError, match=f"The {what} must be an AnnData .*not {type(obj).__name__}; {hint}"):
            run(method, obj, ref)
    if takes_reference(method):
        with pytest.raises(ValueError, match=r"The reference must be an AnnData .*not list; .*anndata\.concat"):
            run(method, q, [ref, ref])
    assert_unchanged(q, before)
    est = get_method(method).estimator
    with pytest.raises(
        ValueError,
        match="The reference must be an AnnData" if takes_reference(method) else "The data must be an AnnData",
    ):
        if method == "cicl":
            est(verbose=False).fit("data.h5ad")
        elif method == "itclust":
            est(verbose=False).fit("ref.h5ad", query=q)
        else:
            est(verbose=False).fit("ref.h5ad")


@pytest.mark.parametrize("method", METHODS)
def test_rerun_replaces_only_own_output_and_says_so(method):
    ref, q = toy(), toy(seed=1, prefix="q")
    q.obs["keep_me"] = 1.5
    q.obsm["X_user"] = np.ones((q.n_obs, 2))
    run(method, q, ref)
    with pytest.warns(UserWarning, match=f"Replacing the previous {method} output"):
        run(method, q, ref, seed=1)
    assert (q.obs["keep_me"] == 1.5).all() and np.all(q.obsm["X_user"] == 1)
    other = "scnym" if method != "scnym" else "jind"
    before = snapshot(q)
    with pytest.raises(ValueError, match=f"written by pybridge {method}"):
        run(other, q, ref, key_added=method)
    assert_unchanged(q, before)


# ============================================================================ environment
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.usefixtures("no_training")
def test_cuda_requested_without_gpu_is_a_clear_error(method):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    ref, q = toy(), toy(seed=1, prefix="q")
    with pytest.raises(ValueError, match="device='cuda' was requested but no CUDA GPU.*'cpu' or device='auto'"):
        run(method, q, ref, device="cuda")
    with pytest.raises(ValueError, match="Unknown device 'gpu'"):
        run(method, q, ref, device="gpu")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.usefixtures("no_training")
def test_unknown_option_is_a_type_error_naming_the_valid_ones(method):
    ref, q = toy(), toy(seed=1, prefix="q")
    with pytest.raises(TypeError, match="Unknown .*Config option\\(s\\): n_epoch\\b.*Valid options"):
        run(method, q, ref, n_epoch=3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.usefixtures("no_training")
def test_an_option_of_the_wrong_type_is_a_type_error_naming_option_and_type(method):
    ref, q = toy(), toy(seed=1, prefix="q")
    epochs = {"nmf_transfer": "nmf_max_iter", "itclust": "source_epochs", "linear": "max_iter"}.get(method, "n_epochs")
    with pytest.raises(TypeError, match=f"Config option {epochs} must be an integer, not 'ten' \\(str\\)"):
        run(method, q, ref, **{epochs: "ten"})
    with pytest.raises(TypeError, match=f"Config option {epochs} must be an integer, not 2.5"):
        run(method, q, ref, **{epochs: 2.5})
    with pytest.raises(ValueError, match=f"Config option {epochs} must be an integer, not True \\(bool\\)"):
        run(method, q, ref, **{epochs: True})


def test_option_types_from_r_and_json_are_converted_where_exact():
    from pybridge.models._base import make_config

    cfg = make_config(pybridge.ScNymConfig, None, {"n_epochs": 12.0, "lr": 1, "joint_forward": None})
    assert (cfg.n_epochs, cfg.lr, cfg.joint_forward) == (12, 1.0, None)
    assert type(cfg.n_epochs) is int and type(cfg.lr) is float
    with pytest.raises(TypeError, match="joint_forward must be True or False or None, not 'yes'"):
        make_config(pybridge.ScNymConfig, None, {"joint_forward": "yes"})
    assert make_config(pybridge.ItClustConfig, None, {"min_genes": 200}).min_genes == 200  # int | str
    assert make_config(pybridge.ItClustConfig, None, {"min_genes": "auto"}).min_genes == "auto"


@pytest.mark.parametrize("method", METHODS)
def test_interrupt_mid_training_leaves_the_object_unchanged(method, monkeypatch):
    """KeyboardInterrupt at the first progress step of training: it propagates, and nothing was written."""
    interrupt_training(monkeypatch)
    ref, q = toy(), toy(seed=1, prefix="q")
    cfg = {"nmf_refine": True} if method == "nmf_transfer" else {}  # the refinement loop reports progress
    before = snapshot(q)
    with pytest.raises(KeyboardInterrupt):
        run(method, q, ref, **cfg)
    assert_unchanged(q, before)


def test_a_result_that_cannot_be_written_leaves_the_object_as_it_was():
    """to_adata builds and checks everything before it writes (no half-written object)."""
    from pybridge.result import AnnotationResult

    q = toy(seed=1, prefix="q")
    n = q.n_obs
    probs = np.full((n, 2), 0.5)
    bad = AnnotationResult(
        obs_names=q.obs_names,
        classes=["A", "B"],
        probabilities=probs,
        labels=np.array(["A"] * n, dtype=object),
        raw_labels=np.array(["A"] * n, dtype=object),
        confidence=probs.max(1),
        embedding=np.zeros((n - 1, 4)),
        method="scnym",
    )
    before = snapshot(q)
    with pytest.raises(ValueError, match="nothing was written"):
        bad.to_adata(q)
    assert_unchanged(q, before)
