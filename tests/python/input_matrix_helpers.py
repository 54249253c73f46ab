"""Shared pieces of the bad-input matrix (data/test_input_matrix.py, methods/test_input_matrix_models.py,
r/test_input_matrix_r.py): tiny data, the smallest settings of each method, and the training guards.

Not a test module; importable because pytest puts tests/python (conftest.py's folder) on sys.path.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import pybridge  # noqa: F401 (registers the methods)
from pybridge.models._registry import get_method, methods

METHODS = methods()
#: the smallest settings each method allows on 48 cells x 80 genes (properties, not accuracy)
TINY = {
    "scnym": dict(n_epochs=2, min_epochs=1, patience=2, n_hidden=32, batch_size=32),
    "jind": dict(
        n_top_genes=80,
        n_epochs=2,
        gan_epochs=1,
        gan_min_steps=1,
        gan_stop="epochs",
        n_latent=16,
        n_hidden=16,
        gan_hidden=16,
    ),
    "itclust": dict(
        layerwise_epochs=3,
        pretrain_epochs=6,
        source_epochs=3,
        maxiter=2,
        min_genes=5,
        min_cells=3,
        hidden_dims=(16, 8),
        n_top_genes=80,
    ),
    "cicl": dict(
        n_clusters=3,
        n_top_genes=80,
        n_layers=1,
        head_dim=16,
        ffn_dim=32,
        proj_hidden=32,
        proj_dim=16,
        n_epochs=1,
        kmeans_n_init=1,
        kmeans_n_init_train=1,
    ),
    "nmf_transfer": dict(
        n_clusters=3, gene_filter=False, thetas=(0.5,), nmf_max_iter=50, kmeans_n_init=2, nmf_refine=False
    ),
    "linear": dict(max_iter=100),
}
TYPES = np.array(["A", "B", "C"])
#: modules whose training loops report progress through ``progress()``: where each estimator class is defined
#: (the guards below patch ``<module>.progress``, which fails loudly if a module has none)
TRAINING_MODULES = sorted({get_method(m).estimator.__module__ for m in METHODS})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices gain nothing from threads, and on a busy machine OpenMP threads wait on each other."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def toy(n_cells=48, n_genes=80, seed=0, prefix="c") -> ad.AnnData:
    """Poisson counts of three cell types, each with 10 marker genes; labels in obs['cell_type']."""
    rng = np.random.default_rng(seed)
    lab = np.arange(n_cells) % 3
    mu = np.full((3, n_genes), 2.0)
    for t in range(3):
        mu[t, t * 10 : (t + 1) * 10] = 15.0
    a = ad.AnnData(sp.csr_matrix(rng.poisson(mu[lab]).astype(np.float32)))
    a.obs_names = [f"{prefix}{i}" for i in range(n_cells)]
    a.var_names = [f"G{j}" for j in range(n_genes)]
    a.obs["cell_type"] = pd.Categorical(TYPES[lab])
    return a


def is_annotation(method: str) -> bool:
    """The method returns an AnnotationResult (labels); ItClust is a clustering method that maps types."""
    return get_method(method).kind == "annotation"


def needs_reference(method: str) -> bool:
    """The method must have a labelled reference (scNym, JIND, ItClust): run as ``annotate`` by the CLI."""
    return get_method(method).reference == "required"


def takes_reference(method: str) -> bool:
    return get_method(method).reference != "none"


class TrainingStarted(BaseException):
    """Raised by the guard when a training loop starts."""


@pytest.fixture()
def no_training(monkeypatch):
    def progress(*args, **kwargs):
        raise TrainingStarted("training started before the input was validated")

    for mod in TRAINING_MODULES:
        monkeypatch.setattr(f"{mod}.progress", progress)


def snapshot(a: ad.AnnData) -> dict:
    return {
        "obs": a.obs.copy(),
        "obsm": dict(a.obsm),
        "uns": dict(a.uns),
        "X": None if a.X is None else a.X.copy(),
        "var_names": a.var_names.copy(),
    }


def assert_unchanged(a: ad.AnnData, before: dict) -> None:
    pd.testing.assert_frame_equal(a.obs, before["obs"])
    assert set(a.obsm) == set(before["obsm"]) and set(a.uns) == set(before["uns"])
    assert a.var_names.equals(before["var_names"])
    Xa, Xb = a.X, before["X"]
    if Xa is None or Xb is None:
        assert Xa is None and Xb is None
        return
    if sp.issparse(Xa):
        Xa, Xb = Xa.toarray(), Xb.toarray()
    np.testing.assert_array_equal(Xa, Xb)


def interrupt_training(monkeypatch, modules=None):
    """Make the training loops of ``modules`` (default: every method) raise KeyboardInterrupt at their first
    progress step, as a user pressing Ctrl-C mid-training would."""
    import pybridge.train as tr

    class InterruptingBar:
        def __init__(self, *args, **kwargs):
            self.bar = tr.progress(*args, **kwargs)

        def update(self, *args, **kwargs):
            raise KeyboardInterrupt

        def __getattr__(self, name):
            return getattr(self.bar, name)

    for mod in modules or TRAINING_MODULES:
        monkeypatch.setattr(f"{mod}.progress", InterruptingBar)
