"""Shared fixtures: the real datasets in ../shared/data (skipped when absent) and small slices of them."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("PYBRIDGE_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(int(os.environ.get("PYBRIDGE_TEST_THREADS", "2")))


#: set by scripts/lane.sh: the run is in the current-stack lane (Debian trixie: R 4.5, Seurat 5, numpy 2)
IN_LANE = bool(os.environ.get("PYBRIDGE_LANE"))


def pytest_collection_modifyitems(config, items):
    """In the current-stack lane, the slow real-data training tests of the Python core are left to the bookworm
    run: the same code, and its accuracy floors are set for bookworm's torch; the lane checks the stack (R,
    reticulate, rpy2, numpy 2), so the tests that drive R still run there."""
    if not IN_LANE:
        return
    skip = pytest.mark.skip(
        reason="real-data accuracy of the Python core is checked on the bookworm run (torch 2.13); "
        "the trixie lane checks the R/Python stack"
    )
    for item in items:
        if "slow" in item.keywords and "r" not in item.keywords and "/r/" not in str(item.fspath):
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    # free R objects left in reference cycles while rpy2 is still whole (at interpreter teardown
    # their finalizers print "TypeError: 'NoneType' object is not callable")
    gc.collect()


def load(name: str) -> ad.AnnData:
    path = DATA_DIR / f"{name}.h5ad"
    if not path.exists():
        pytest.skip(f"real dataset {path} not available")
    return ad.read_h5ad(path)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.exists():
        pytest.skip(f"data directory {DATA_DIR} not available")
    return DATA_DIR


@pytest.fixture(scope="session")
def panc8():
    return load("panc8_small")


@pytest.fixture()
def panc8_pair(panc8):
    """Leave-one-technology-out: indrop query, the other four technologies as reference (fresh copies)."""
    q = panc8[panc8.obs["batch"] == "indrop"].copy()
    r = panc8[panc8.obs["batch"] != "indrop"].copy()
    return r, q


def accuracy(pred, truth) -> float:
    return float(np.mean(np.asarray(pred, dtype=str) == np.asarray(truth, dtype=str)))


@pytest.fixture()
def r_session():
    """rpy2's ``robjects`` with pybridge's callback registered; skips when R, rpy2 or the R packages are missing."""
    try:
        import anndata2ri  # noqa: F401
        import rpy2.robjects as ro
    except Exception as err:  # ImportError, or R not found by rpy2
        pytest.skip(f"rpy2/anndata2ri/R not available: {err}")
    for pkg in ("pybridge", "SeuratObject", "SingleCellExperiment"):
        if not ro.r(f'isTRUE(requireNamespace("{pkg}", quietly = TRUE))')[0]:
            pytest.skip(f"R package {pkg} not installed")
    import pybridge.r as pr

    pr.register()
    return ro
