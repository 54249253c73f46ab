"""Package-wide settings: device choice, verbosity and logging.

Nothing here configures logging handlers at import time; the CLI (and users)
decide where messages go. ``settings.verbose`` is only the *default* for the
``verbose=`` argument of the public functions.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger("pybridge")
logger.addHandler(logging.NullHandler())


class _Settings:
    """Mutable defaults. Each public function also takes these as arguments."""

    def __init__(self) -> None:
        self.verbose: bool = os.environ.get("PYBRIDGE_QUIET", "") == ""
        self.device: str = "auto"

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"pybridge.settings(verbose={self.verbose}, device={self.device!r})"


settings = _Settings()


def resolve_verbose(verbose: bool | None) -> bool:
    return settings.verbose if verbose is None else bool(verbose)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a torch device.

    ``"auto"`` picks CUDA when it is available. Asking for CUDA on a machine
    without it is an error rather than a silent fallback, so benchmarks never
    report CPU numbers as GPU ones.
    """
    if device is None:
        device = settings.device
    if isinstance(device, torch.device):
        device = str(device)
    device = str(device).lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but no CUDA GPU is available to torch "
                "(torch.cuda.is_available() is False). Use device='cpu' or device='auto'."
            )
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
