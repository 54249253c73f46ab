"""Pieces of the training loop that every method reuses."""
from ._toolkit import EarlyStopping, History, make_rng, progress, seed_everything, split_indices, Timer

__all__ = ["EarlyStopping", "History", "Timer", "make_rng", "progress", "seed_everything", "split_indices"]
