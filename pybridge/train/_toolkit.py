"""Seeding, early stopping, history, progress bars and timing."""

from __future__ import annotations

import copy
import random
import sys
import time
from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator for explicit use.

    With the same seed, CPU training is bit-for-bit repeatable for a fixed
    number of torch threads.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def make_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(int(seed))


def split_indices(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split into (train, validation) indices.

    Each class contributes ``round(fraction * n_k)`` cells to validation but
    always keeps at least one cell in training (classes with one cell are
    never held out).
    """
    labels = np.asarray(labels)
    train, val = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = rng.permutation(idx)
        n_val = int(round(fraction * len(idx)))
        n_val = min(n_val, len(idx) - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class BestWeights:
    """A copy of some modules' weights at the best epoch so far, to put back after training."""

    def __init__(self):
        self.epoch: int | None = None
        self.value: float | None = None
        self._state: dict | None = None

    def keep(self, epoch: int, value: float, modules: dict[str, torch.nn.Module]) -> None:
        """Remember ``modules``' current weights as the best, reached at ``epoch`` with ``value``."""
        self.epoch, self.value = epoch, value
        self._state = {k: copy.deepcopy(m.state_dict()) for k, m in modules.items()}

    def restore(self, modules: dict[str, torch.nn.Module]) -> None:
        """Load the kept weights into ``modules`` (nothing happens when none were kept)."""
        if self._state is not None:
            for k, m in modules.items():
                m.load_state_dict(self._state[k])


class EarlyStopping:
    """Keep the best weights by a monitored value; stop after ``patience`` epochs without improvement.

    Checkpoints are only taken once ``epoch >= min_epochs``; until then the
    latest weights stand in.
    """

    def __init__(self, patience: int, min_epochs: int = 0, mode: str = "min"):
        self.patience, self.min_epochs, self.mode = int(patience), int(min_epochs), mode
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self._best = BestWeights()

    def _better(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def step(self, epoch: int, value: float, modules: dict[str, torch.nn.Module]) -> bool:
        """Record an epoch's value; return True when training should stop."""
        if epoch < self.min_epochs:
            return False
        if self._better(value):
            self.best_value, self.best_epoch = float(value), int(epoch)
            self._best.keep(self.best_epoch, self.best_value, modules)
            return False
        return epoch - self.best_epoch >= self.patience

    def restore(self, modules: dict[str, torch.nn.Module]) -> None:
        """Load the best weights seen into ``modules``."""
        self._best.restore(modules)


class History(defaultdict):
    """Per-epoch training records: ``history['loss'][epoch]``."""

    def __init__(self):
        super().__init__(list)

    def record(self, **values) -> None:
        for k, v in values.items():
            self[k].append(float(v))

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in self.items()}


#: seconds between bar redraws when stderr is not a terminal (a log file, CI, R's console through reticulate)
QUIET_REDRAW_S = 5.0


def progress(total: int, verbose: bool, desc: str):
    """A tqdm bar (to stderr), silent when ``verbose`` is False.

    On a terminal or in a notebook (tqdm.auto's widget) the bar redraws as often as tqdm likes (every
    0.1 s). Elsewhere each redraw is a new line or a carriage return piled onto one line of a log, so it
    redraws at most every ``QUIET_REDRAW_S`` seconds (plus the final state). Loss values set with
    ``set_postfix`` show at the next redraw.
    """
    return _Bar(
        total=total,
        desc=desc,
        disable=not verbose,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.1 if _redraws_in_place() else QUIET_REDRAW_S,
    )


class _Bar(tqdm):
    """tqdm whose ``set_postfix`` waits for the next timed redraw instead of forcing one."""

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        super().set_postfix(ordered_dict, refresh=refresh, **kwargs)


def _redraws_in_place() -> bool:
    """Whether a redraw replaces the bar: a notebook widget, or stderr on a terminal."""
    if tqdm.__module__ == "tqdm.notebook":
        return True
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class Timer:
    """Collects named wall-clock timings: ``with timer('fit'): ...``."""

    def __init__(self):
        self.times: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self_inner):
                self_inner.t0 = time.perf_counter()

            def __exit__(self_inner, *exc):
                timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - self_inner.t0

        return _Ctx()
