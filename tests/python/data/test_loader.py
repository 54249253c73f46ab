"""Minibatches (pybridge/data/_loader.py): one pass of index batches, the endless sampler, densifying rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pybridge.data import InfiniteSampler, densify, epoch_batches, iter_dense


def rng(seed=0):
    return np.random.default_rng(seed)


def sizes(batches):
    return [len(b) for b in batches]


# ============================================================================ epoch_batches
@pytest.mark.parametrize(
    "n, batch_size, drop_last, expected",
    [
        (100, 32, True, [32, 32, 32]),  # the incomplete tail (4) is dropped
        (100, 32, False, [32, 32, 32, 4]),
        (96, 32, True, [32, 32, 32]),  # exact multiple: nothing to drop
        (96, 32, False, [32, 32, 32]),
        (33, 32, False, [33]),  # a tail of 1 < min_size=2 is merged into the previous batch
        (33, 32, True, [32]),  # ... unless it is dropped
        (65, 32, False, [32, 33]),
    ],
)
def test_epoch_batch_sizes(n, batch_size, drop_last, expected):
    assert sizes(epoch_batches(n, batch_size, rng(), drop_last=drop_last)) == expected


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("shuffle", [True, False])
def test_data_of_at_most_one_batch_is_one_batch(drop_last, shuffle):
    for n in (1, 2, 5, 32):
        (only,) = epoch_batches(n, 32, rng(), shuffle=shuffle, drop_last=drop_last)
        np.testing.assert_array_equal(np.sort(only), np.arange(n))
    assert epoch_batches(0, 32, rng(), shuffle=shuffle, drop_last=drop_last) == []


def test_min_size_merges_a_short_tail_only():
    # tail of 3: kept with min_size <= 3, merged into the previous batch with min_size 4 (CICL's setting)
    assert sizes(epoch_batches(35, 16, rng(), drop_last=False, min_size=4)) == [16, 19]
    assert sizes(epoch_batches(35, 16, rng(), drop_last=False, min_size=3)) == [16, 16, 3]
    assert sizes(epoch_batches(33, 16, rng(), drop_last=False, min_size=1)) == [16, 16, 1]  # JIND's setting
    # a full last batch smaller than min_size (batch_size < min_size) is merged as well
    assert sizes(epoch_batches(6, 2, rng(), drop_last=False, min_size=3)) == [2, 4]
    # a single batch has nothing to merge into: it stays whole whatever min_size
    for min_size in (1, 2, 4, 10):
        assert sizes(epoch_batches(3, 16, rng(), min_size=min_size)) == [3]


@pytest.mark.parametrize("n, batch_size, drop_last", [(100, 32, False), (96, 32, True), (33, 32, False), (7, 32, True)])
def test_batches_are_a_partition_of_the_items_when_nothing_is_dropped(n, batch_size, drop_last):
    batches = epoch_batches(n, batch_size, rng(3), drop_last=drop_last)
    flat = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(flat), np.arange(n))


def test_dropped_tail_items_are_a_random_subset_and_the_rest_have_no_repeats():
    flat = np.concatenate(epoch_batches(100, 32, rng(1)))
    assert len(flat) == 96 and len(np.unique(flat)) == 96 and flat.max() < 100
    left_out = [set(range(100)) - set(np.concatenate(epoch_batches(100, 32, rng(s))).tolist()) for s in range(5)]
    assert len({frozenset(x) for x in left_out}) > 1  # a different tail is dropped each epoch


def test_shuffle_follows_the_generator_and_no_shuffle_keeps_the_order():
    a = epoch_batches(50, 16, rng(7), drop_last=False)
    b = epoch_batches(50, 16, rng(7), drop_last=False)
    c = epoch_batches(50, 16, rng(8), drop_last=False)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert not np.array_equal(np.concatenate(a), np.arange(50))
    ordered = epoch_batches(50, 16, rng(7), shuffle=False, drop_last=False)
    np.testing.assert_array_equal(np.concatenate(ordered), np.arange(50))
    np.testing.assert_array_equal(ordered[0], np.arange(16))


def test_shuffle_draws_from_the_callers_generator_once_per_epoch():
    """The models pass one generator to every epoch: consecutive epochs differ, and the draws are repeatable."""
    g1, g2 = rng(11), rng(11)
    e1, e2 = epoch_batches(40, 8, g1), epoch_batches(40, 8, g1)
    assert not np.array_equal(np.concatenate(e1), np.concatenate(e2))
    np.testing.assert_array_equal(np.concatenate(epoch_batches(40, 8, g2)), np.concatenate(e1))
    np.testing.assert_array_equal(np.concatenate(epoch_batches(40, 8, g2)), np.concatenate(e2))
    # shuffle=False draws nothing
    g3, g4 = rng(2), rng(2)
    epoch_batches(40, 8, g3, shuffle=False)
    assert g3.integers(1 << 30) == g4.integers(1 << 30)


# ============================================================================ InfiniteSampler
def test_infinite_sampler_covers_every_item_once_per_pass_then_reshuffles():
    s = InfiniteSampler(10, 5, rng(0))
    assert iter(s) is s
    passes = [np.concatenate([next(s), next(s)]) for _ in range(4)]
    for p in passes:
        np.testing.assert_array_equal(np.sort(p), np.arange(10))
    assert len({tuple(p) for p in passes}) > 1  # a new permutation each pass


def test_infinite_sampler_skips_an_incomplete_tail_and_always_yields_full_batches():
    s = InfiniteSampler(10, 4, rng(0))
    batches = [next(s) for _ in range(9)]
    assert sizes(batches) == [4] * 9
    # two batches per pass (8 of 10 items), then a fresh permutation: no batch straddles two passes
    for first, second in zip(batches[0::2], batches[1::2]):
        assert len(np.intersect1d(first, second)) == 0


def test_infinite_sampler_returns_a_set_smaller_than_a_batch_whole():
    s = InfiniteSampler(3, 128, rng(0))
    assert s.batch_size == 3
    for _ in range(3):
        np.testing.assert_array_equal(np.sort(next(s)), np.arange(3))


def test_infinite_sampler_is_reproducible_under_a_seed():
    a, b = InfiniteSampler(20, 6, rng(4)), InfiniteSampler(20, 6, rng(4))
    for _ in range(10):
        np.testing.assert_array_equal(next(a), next(b))


@pytest.mark.parametrize("n", [0, -1])
def test_infinite_sampler_needs_an_item(n):
    with pytest.raises(ValueError, match="at least one item"):
        InfiniteSampler(n, 4, rng())


# ============================================================================ densify, iter_dense
@pytest.mark.parametrize("fmt", ["csr", "dense"])
def test_densify_returns_the_rows_as_float32_in_the_given_order(fmt):
    dense = np.arange(24, dtype=np.int64).reshape(6, 4)
    X = sp.csr_matrix(dense) if fmt == "csr" else dense
    t = densify(X, np.array([4, 0, 4]), torch.device("cpu"))
    assert t.dtype == torch.float32 and t.device.type == "cpu" and tuple(t.shape) == (3, 4)
    np.testing.assert_array_equal(t.numpy(), dense[[4, 0, 4]].astype(np.float32))


def test_iter_dense_walks_all_rows_in_order():
    dense = np.random.default_rng(0).poisson(2, size=(11, 3)).astype(np.float32)
    chunks = list(iter_dense(sp.csr_matrix(dense), 4, torch.device("cpu")))
    assert [(s.start, s.stop) for s, _ in chunks] == [(0, 4), (4, 8), (8, 11)]
    np.testing.assert_array_equal(np.concatenate([t.numpy() for _, t in chunks]), dense)
    assert list(iter_dense(dense[:0], 4, torch.device("cpu"))) == []
