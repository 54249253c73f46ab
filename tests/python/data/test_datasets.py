"""pybridge.datasets.simulate: integer counts, labelled clusters, reproducible with a seed."""

import numpy as np
import scipy.sparse as sp

import pybridge.datasets


def test_simulate_counts_labels_and_seed():
    a = pybridge.datasets.simulate(200, 300, seed=1)
    b = pybridge.datasets.simulate(200, 300, seed=1)
    c = pybridge.datasets.simulate(200, 300, seed=2)
    X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    assert a.shape == (200, 300) and X.min() >= 0 and np.allclose(X, np.round(X))
    assert a.obs["cell_type"].nunique() > 1
    Xb = b.X.toarray() if sp.issparse(b.X) else np.asarray(b.X)
    Xc = c.X.toarray() if sp.issparse(c.X) else np.asarray(c.X)
    np.testing.assert_array_equal(X, Xb)
    assert not np.array_equal(X, Xc)
