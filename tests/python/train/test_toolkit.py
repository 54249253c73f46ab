"""The shared training toolkit (pybridge/train/_toolkit.py): the stratified train/validation split,
early stopping with the best weights kept, history, timing, seeding, and the progress bar (silent when
asked, and not flooding logs when stderr is not a terminal)."""

from __future__ import annotations

import numpy as np
import torch

import pybridge.train._toolkit as tk
from pybridge.models.itclust._model import _MinDeltaStopping


# ============================================================================ split_indices
def _check_partition(train, val, n):
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, no repeats
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(n))


def test_split_is_stratified_with_rounded_sizes_per_class():
    labels = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 7 + ["d"] * 13)
    train, val = tk.split_indices(labels, 0.2, np.random.default_rng(0))
    _check_partition(train, val, len(labels))
    held_out = {c: int(np.sum(labels[val] == c)) for c in "abcd"}
    assert held_out == {"a": 10, "b": 6, "c": 1, "d": 3}  # round(0.2 * n_k): 10, 6, 1.4 -> 1, 2.6 -> 3
    assert train.dtype.kind == val.dtype.kind == "i"


def test_split_accepts_numeric_labels_in_any_order():
    rng = np.random.default_rng(5)
    labels = rng.permutation(np.repeat([3, 1, 2], [20, 10, 40]))
    train, val = tk.split_indices(labels, 0.5, np.random.default_rng(1))
    _check_partition(train, val, len(labels))
    assert {k: int(np.sum(labels[val] == k)) for k in (1, 2, 3)} == {1: 5, 2: 20, 3: 10}


def test_split_is_reproducible_under_a_seed_and_differs_across_seeds():
    labels = np.repeat(["x", "y", "z"], [40, 25, 35])
    a = tk.split_indices(labels, 0.3, np.random.default_rng(7))
    b = tk.split_indices(labels, 0.3, np.random.default_rng(7))
    c = tk.split_indices(labels, 0.3, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert len(c[1]) == len(a[1]) and not np.array_equal(a[1], c[1])


def test_split_never_holds_out_a_whole_class():
    labels = np.array(["solo"] + ["pair"] * 2 + ["many"] * 10)
    train, val = tk.split_indices(labels, 0.99, np.random.default_rng(0))
    _check_partition(train, val, len(labels))
    # every class keeps exactly one training cell; a class of one cell is never held out
    assert {c: int(np.sum(labels[train] == c)) for c in ("solo", "pair", "many")} == {"solo": 1, "pair": 1, "many": 1}
    assert "solo" not in set(labels[val])


def test_split_with_a_zero_fraction_or_tiny_classes_holds_out_nothing():
    labels = np.array(["a", "b", "b", "c", "c", "c"])
    for fraction in (0.0, 0.1):  # round(0.1 * 3) = 0
        train, val = tk.split_indices(labels, fraction, np.random.default_rng(0))
        np.testing.assert_array_equal(train, np.arange(6))
        assert val.size == 0


# ============================================================================ EarlyStopping
def _net(value: float) -> torch.nn.Linear:
    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(value)
        net.bias.fill_(value)
    return net


def _run(stopper, values, net=None):
    """Feed ``values`` epoch by epoch (the weights hold the epoch number); return the epoch that stopped, or None."""
    net = net if net is not None else _net(0.0)
    for epoch, v in enumerate(values):
        with torch.no_grad():
            net.weight.fill_(epoch)
        if stopper.step(epoch, v, {"net": net}):
            return epoch
    return None


def test_early_stopping_min_mode_waits_patience_epochs_after_the_best():
    stopper = tk.EarlyStopping(patience=3)
    assert _run(stopper, [5.0, 4.0, 4.5, 4.6, 4.7, 1.0]) == 4  # 3 epochs after the best (epoch 1) without a better one
    assert (stopper.best_epoch, stopper.best_value) == (1, 4.0)


def test_early_stopping_an_improvement_resets_the_patience():
    stopper = tk.EarlyStopping(patience=2)
    assert _run(stopper, [5.0, 6.0, 4.0, 7.0, 3.0, 8.0, 9.0, 0.0]) == 6
    assert stopper.best_epoch == 4 and stopper.best_value == 3.0


def test_early_stopping_an_equal_value_is_not_an_improvement():
    stopper = tk.EarlyStopping(patience=2)
    assert _run(stopper, [1.0, 1.0, 1.0]) == 2
    assert stopper.best_epoch == 0


def test_early_stopping_max_mode():
    stopper = tk.EarlyStopping(patience=2, mode="max")
    assert _run(stopper, [0.1, 0.5, 0.4, 0.6, 0.6, 0.2]) == 5
    assert (stopper.best_epoch, stopper.best_value) == (3, 0.6)
    low = tk.EarlyStopping(patience=2, mode="min")
    assert _run(low, [0.1, 0.5, 0.4, 0.6, 0.6, 0.2]) == 2 and low.best_epoch == 0


def test_early_stopping_zero_patience_stops_at_the_first_epoch_without_improvement():
    stopper = tk.EarlyStopping(patience=0)
    assert _run(stopper, [3.0, 2.0, 1.0, 1.5]) == 3
    assert stopper.best_epoch == 2


def test_early_stopping_ignores_epochs_before_min_epochs():
    stopper = tk.EarlyStopping(patience=1, min_epochs=3)
    # epoch 0 is by far the best but comes before min_epochs: neither a checkpoint nor a reason to stop
    assert _run(stopper, [0.0, 9.0, 9.0, 5.0, 4.0, 6.0, 7.0]) == 5
    assert (stopper.best_epoch, stopper.best_value) == (4, 4.0)
    never = tk.EarlyStopping(patience=0, min_epochs=10)
    assert _run(never, [5.0, 6.0, 7.0]) is None and never.best_epoch is None


def test_early_stopping_restores_a_copy_of_the_best_weights():
    stopper = tk.EarlyStopping(patience=10)
    net = _net(0.0)
    _run(stopper, [3.0, 1.0, 2.0, 2.5], net)  # weights are filled with the epoch number
    assert torch.all(net.weight == 3.0)
    stopper.restore({"net": net})
    assert torch.all(net.weight == 1.0) and torch.all(net.bias == 0.0)  # epoch 1's weights, bias never changed
    with torch.no_grad():
        net.weight.fill_(42.0)  # the checkpoint is a copy, not a view of the live weights
    stopper.restore({"net": net})
    assert torch.all(net.weight == 1.0)


def test_early_stopping_restore_without_a_checkpoint_keeps_the_latest_weights():
    stopper = tk.EarlyStopping(patience=1, min_epochs=5)
    net = _net(0.0)
    _run(stopper, [1.0, 2.0], net)
    stopper.restore({"net": net})
    assert torch.all(net.weight == 1.0)  # the last epoch's weights stand in


def test_min_delta_stopping_counts_only_improvements_larger_than_min_delta():
    """ItClust's variant (Keras' min_delta): 0.95 after 1.0 is not an improvement of more than 0.1."""
    stopper = _MinDeltaStopping(patience=2, min_delta=0.1)
    assert _run(stopper, [1.0, 0.95, 0.85, 0.8, 0.75]) == 4
    assert (stopper.best_epoch, stopper.best_value) == (2, 0.85)
    plain = tk.EarlyStopping(patience=2)
    assert _run(plain, [1.0, 0.95, 0.85, 0.8, 0.75]) is None and plain.best_epoch == 4


def test_best_weights_keeps_a_copy_and_restores_it():
    kept = tk.BestWeights()
    net = _net(0.0)
    kept.restore({"net": net})  # nothing kept yet: nothing happens
    assert torch.all(net.weight == 0.0) and (kept.epoch, kept.value) == (None, None)
    with torch.no_grad():
        net.weight.fill_(2.0)
    kept.keep(4, 0.5, {"net": net})
    with torch.no_grad():
        net.weight.fill_(9.0)
    assert (kept.epoch, kept.value) == (4, 0.5)
    kept.restore({"net": net})
    assert torch.all(net.weight == 2.0)


# ============================================================================ History, Timer, seeding
def test_history_records_floats_per_epoch():
    h = tk.History()
    h.record(loss=np.float32(1.5), acc=torch.tensor(0.25))
    h.record(loss=1.0, acc=0.5)
    assert h.to_dict() == {"loss": [1.5, 1.0], "acc": [0.25, 0.5]}
    assert all(type(v) is float for vs in h.to_dict().values() for v in vs)
    assert h["never_recorded"] == []


def test_timer_accumulates_named_timings(monkeypatch):
    clock = iter([10.0, 12.5, 20.0, 21.0, 30.0, 30.25])
    monkeypatch.setattr(tk.time, "perf_counter", lambda: next(clock))
    timer = tk.Timer()
    with timer("fit"):
        pass
    with timer("fit"):
        pass
    with timer("predict"):
        pass
    assert timer.times == {"fit": 3.5, "predict": 0.25}


def test_seed_everything_repeats_every_generator():
    def draws(seed):
        g = tk.seed_everything(seed)
        return (
            np.random.rand(),
            torch.rand(1).item(),
            torch.rand(1, generator=g).item(),
            tk.make_rng(seed).integers(1 << 30),
        )

    first, again, other = draws(3), draws(3), draws(4)
    assert first == again
    assert all(x != y for x, y in zip(first, other))


# ============================================================================ progress bar


def test_progress_is_silent_without_verbose(capsys):
    bar = tk.progress(50, False, "demo")
    for _ in range(50):
        bar.update(1)
    bar.close()
    assert capsys.readouterr().err == ""


def test_progress_redraws_rarely_into_a_log(capsys):
    # capsys replaces stderr with a non-terminal stream, as a log file, CI or R's console does
    bar = tk.progress(500, True, "demo")
    assert bar.mininterval == tk.QUIET_REDRAW_S
    for i in range(500):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")  # the training loops set a postfix every epoch
    bar.close()
    assert 1 <= capsys.readouterr().err.count("demo") <= 3  # first draw, maybe one more, the final state


class _Terminal:
    def isatty(self):
        return True

    def write(self, text):
        pass

    def flush(self):
        pass


def test_progress_redraws_often_on_a_terminal_or_in_a_notebook(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(tk.sys, "stderr", _Terminal())
        bar = tk.progress(5, True, "demo")
        assert bar.mininterval == 0.1
        bar.close()
    monkeypatch.setattr(
        tk.tqdm, "__module__", "tqdm.notebook"
    )  # what tqdm.auto picks in Jupyter (stderr is no terminal there)
    assert tk._redraws_in_place()
