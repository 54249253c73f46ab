"""Model directories: tensors in safetensors, everything else in JSON.

Loading never unpickles anything: only ``model.safetensors`` (plain tensors)
and ``pybridge.json`` are read. A directory holding pickles but no
safetensors file is refused with an explanation.

Versions: ``format_version`` is the layout of the directory. A model written by
another pybridge version in the same format loads, with a warning naming both
versions; a newer format is an error that says to upgrade. ``pybridge.json``
also lists every tensor's name and shape, so a weights file that was swapped or
edited is refused before any state dict is built.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "pybridge-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "pybridge.json"
#: keys every model's pybridge.json holds (each estimator adds its own)
REQUIRED_META = ("method", "config", "genes")


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

    path = Path(path).expanduser()  # "~/models/x" means the home folder, as in R and pandas
    if path.exists() and not path.is_dir():
        raise ValueError(f"Cannot save the model to {str(path)!r}: it is a file; a model is saved as a folder.")
    path.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(flat, str(path / WEIGHTS))
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": method,
        "pybridge_version": __version__,
        **_jsonable(meta),
        "tensors": {k: list(v.shape) for k, v in flat.items()},
    }
    (path / META).write_text(json.dumps(doc, indent=1))
    return path


def read_meta(path, method: str | None = None, *, warn: bool = True) -> dict:
    """Validate a model directory and return its JSON metadata (no weights are read)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a pybridge model directory (it does not exist or is not a folder).")
    meta_file, weights = path / META, path / WEIGHTS
    if not meta_file.exists() or not weights.exists():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in {".pkl", ".pt", ".pth", ".pickle", ".bin"})
        extra = (
            f" It holds {', '.join(pickles)}: pybridge never loads pickled files, since unpickling can run "
            "arbitrary code."
            if pickles
            else ""
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
    fmt = meta.get("format_version")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ValueError(
            f"{META} in {str(path)!r} has no valid format_version (got {fmt!r}); the file was edited or "
            "truncated. Re-save the model with model.save(dir)."
        )
    if fmt > FORMAT_VERSION:
        raise ValueError(
            f"The model in {str(path)!r} was written by pybridge {meta.get('pybridge_version')} "
            f"(format {fmt}); this pybridge ({_version()}) reads format {FORMAT_VERSION}. Upgrade pybridge."
        )
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(
            f"{META} in {str(path)!r} is incomplete (no {', '.join(missing)}); re-save the model with model.save(dir)."
        )
    if method is not None and meta.get("method") != method:
        raise ValueError(
            f"{str(path)!r} holds a {meta.get('method')!r} model, not {method!r}; load it with the matching estimator."
        )
    written_by = meta.get("pybridge_version")
    if warn and written_by != _version():
        warnings.warn(
            f"The model in {str(path)!r} was written by pybridge {written_by}, this is pybridge {_version()}. "
            f"The file format ({fmt}) is the same, so it loads, but defaults or preprocessing may have changed "
            "between versions; re-train (or re-save) with this version to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
    return meta


def load_model(
    path, method: str | None = None, device: str | torch.device = "cpu", *, warn: bool = True
) -> tuple[dict, dict]:
    """Read a model directory written by :func:`save_model`; returns (tensors, metadata)."""
    path = Path(path).expanduser()
    meta = read_meta(path, method, warn=warn)
    weights = path / WEIGHTS
    try:
        tensors = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"The weights file in {str(path)!r} is corrupt or truncated ({err}).") from None
    manifest = meta.get("tensors")
    if isinstance(manifest, dict):  # absent in directories written before the manifest existed
        got = {k: list(v.shape) for k, v in tensors.items()}
        want = {str(k): list(v) for k, v in manifest.items()}
        if got != want:
            diff = sorted(set(got) ^ set(want)) or sorted(k for k in got if got[k] != want.get(k))
            raise ValueError(
                f"The weights file in {str(path)!r} does not match its {META} (differs in {', '.join(diff[:5])}"
                f"{', ...' if len(diff) > 5 else ''}); the directory mixes files of two models or was edited. "
                "Re-save the model with model.save(dir)."
            )
    return tensors, meta


def config_mismatch(path, err: BaseException) -> ValueError:
    """The error for weights that do not fit the network built from the saved config (an edited config)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ValueError(
        f"The weights in {str(path)!r} do not fit the network that its config describes ({first[:200]}); "
        "the config in the model's metadata was edited or comes from another model. "
        "Re-save the model with model.save(dir) or re-train it."
    )


def _version() -> str:
    from . import __version__

    return __version__


def split_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries ``prefix.<name>`` as a state dict ``{name: tensor}``."""
    p = prefix + "."
    return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}


def join_states(**states: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for prefix, sd in states.items() for k, v in sd.items()}
