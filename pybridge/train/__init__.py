"""Pieces of the training loop that every method reuses."""

from ._toolkit import BestWeights, EarlyStopping, History, Timer, make_rng, progress, seed_everything, split_indices

__all__ = [
    "BestWeights",
    "EarlyStopping",
    "History",
    "Timer",
    "make_rng",
    "progress",
    "seed_everything",
    "split_indices",
]
