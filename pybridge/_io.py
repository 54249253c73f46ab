"""Model directories: tensors in safetensors, everything else in JSON.

Loading never unpickles anything: only ``model.safetensors`` (plain tensors)
and ``pybridge.json`` are read. A directory holding pickles but no
safetensors file is refused with an explanation.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "pybridge-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "pybridge.json"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_model(path, method: str, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    from . import __version__

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(flat, str(path / WEIGHTS))
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": method,
        "pybridge_version": __version__,
        **_jsonable(meta),
    }
    (path / META).write_text(json.dumps(doc, indent=1))
    return path


def read_meta(path, method: str | None = None) -> dict:
    """Validate a model directory and return its JSON metadata (no weights are read)."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a pybridge model directory (it does not exist or is not a folder).")
    meta_file, weights = path / META, path / WEIGHTS
    if not meta_file.exists() or not weights.exists():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in {".pkl", ".pt", ".pth", ".pickle", ".bin"})
        extra = (
            f" It holds {', '.join(pickles)}: pybridge never loads pickled files, since unpickling can run "
            "arbitrary code." if pickles else ""
        )
        raise ValueError(
            f"{str(path)!r} is not a pybridge model directory: it needs {META} and {WEIGHTS}.{extra} "
            "Save models with model.save(dir)."
        )
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{META} in {str(path)!r} is corrupt ({err}); re-save the model.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} does not hold a pybridge model ({META} has no format={FORMAT!r}).")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise ValueError(
            f"The model in {str(path)!r} was written by pybridge {meta.get('pybridge_version')} "
            f"(format {meta.get('format_version')}); this pybridge reads format {FORMAT_VERSION}. Upgrade pybridge."
        )
    if method is not None and meta.get("method") != method:
        raise ValueError(
            f"{str(path)!r} holds a {meta.get('method')!r} model, not {method!r}; "
            f"load it with the matching estimator."
        )
    return meta


def load_model(path, method: str | None = None, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Read a model directory written by :func:`save_model`; returns (tensors, metadata)."""
    meta = read_meta(path, method)
    weights = Path(path) / WEIGHTS
    try:
        tensors = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"The weights file in {str(path)!r} is corrupt or truncated ({err}).") from None
    return tensors, meta


def split_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries ``prefix.<name>`` as a state dict ``{name: tensor}``."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def join_states(**states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for prefix, sd in states.items() for k, v in sd.items()}
