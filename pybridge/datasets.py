"""Simulated data for tests, examples and scale benchmarks.

``simulate`` is the hierarchical negative-binomial simulator of Mieth et al. (2019);
``simulate_transfer`` builds a source/target pair with complete, incomplete or no cluster overlap.
"""

from .models.nmf_transfer import simulate, simulate_transfer

__all__ = ["simulate", "simulate_transfer"]
