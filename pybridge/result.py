"""Result objects: computing is separate from storing.

A method returns an :class:`AnnotationResult` or :class:`ClusteringResult`;
``result.to_adata(adata, key_added)`` writes it with pybridge's naming rules:

annotation: ``obs[key]`` (categorical, rejected cells ``"Unassigned"``),
``obs[key_confidence]``, ``obs[key_raw]`` (when the method rejects),
``obsm[key_probabilities]`` (cells x classes; class names verbatim in
``uns[key]['classes']``), ``obsm[X_key]`` (embedding), ``uns[key]`` (params,
classes, gene overlap, version, timings).

clustering: ``obs[key]`` (categorical cluster id), ``obs[key_confidence]``,
``obs[key_cell_type]`` (mapped type where the method has one),
``obsm[key_probabilities]`` (soft assignment), ``obsm[X_key]``, ``uns[key]``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .rejection import UNASSIGNED


def h5ad_safe(obj: Any) -> Any:
    """Make a nested params dict writable to .h5ad (no None, tuples → lists, numpy → python)."""
    if isinstance(obj, dict):
        return {str(k): h5ad_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        items = [h5ad_safe(v) for v in obj if v is not None]
        if items and all(isinstance(v, str) for v in items):
            return np.array(items, dtype=object)
        return items if not items or isinstance(items[0], (dict, list)) else np.asarray(items)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return "nan"
    return obj


def check_key(adata, key: str, method: str, *, warn: bool = True) -> None:
    """Refuse to overwrite an ``obs`` column that pybridge's ``method`` did not write; warn when replacing its own."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"key_added must be a non-empty string (it names the output columns), not {key!r}.")
    if key not in adata.obs.columns:
        return
    prev = adata.uns.get(key)
    prev_method = prev.get("method") if isinstance(prev, dict) else None
    if prev_method != method:
        origin = f"pybridge {prev_method}" if prev_method else "something other than pybridge"
        raise ValueError(
            f"obs[{key!r}] already exists and was written by {origin}; pass another key_added "
            f"(e.g. key_added={method + '_2'!r}) or delete the column first."
        )
    if warn:
        warnings.warn(f"Replacing the previous {method} output stored under key {key!r}.", UserWarning, stacklevel=3)


def _check_obs_names(adata, obs_names: pd.Index) -> None:
    if adata.n_obs != len(obs_names) or not pd.Index(adata.obs_names).equals(pd.Index(obs_names)):
        raise ValueError(
            "The result was computed for different cells than this object holds "
            f"({len(obs_names)} vs {adata.n_obs} cells, or another order); write it to the object it came from."
        )


@dataclass
class AnnotationResult:
    """Labels and scores from a reference-based classifier."""

    obs_names: pd.Index
    classes: list[str]
    probabilities: np.ndarray
    labels: np.ndarray
    raw_labels: np.ndarray
    confidence: np.ndarray
    embedding: np.ndarray | None = None
    method: str = ""
    rejection: bool = False
    params: dict = field(default_factory=dict)
    #: the model's probabilities before calibration (None when none was applied)
    raw_probabilities: np.ndarray | None = None

    @property
    def rejected(self) -> np.ndarray:
        return np.asarray(self.labels == UNASSIGNED)

    def to_dataframe(self) -> pd.DataFrame:
        df = pd.DataFrame(
            {"label": self.labels, "raw_label": self.raw_labels, "confidence": self.confidence},
            index=pd.Index(self.obs_names, name="cell"),
        )
        return df

    def to_adata(self, adata, key_added: str | None = None, *, copy: bool = False):
        """Write into ``adata`` (or a copy, returned when ``copy=True``).

        Everything is built and checked first and written last, so a failure leaves ``adata`` as it was.
        """
        key = key_added or self.method
        _check_obs_names(adata, self.obs_names)
        check_key(adata, key, self.method)
        categories = list(self.classes) + ([UNASSIGNED] if self.rejection and UNASSIGNED not in self.classes else [])
        obs = {
            key: pd.Categorical(self.labels, categories=categories),
            f"{key}_confidence": np.asarray(self.confidence, dtype=np.float64),
        }
        if self.rejection:
            obs[f"{key}_raw"] = pd.Categorical(self.raw_labels, categories=list(self.classes))
        drop = [f"{key}_raw"] if not self.rejection and f"{key}_raw" in adata.obs.columns and key in adata.uns else []
        obsm = {f"{key}_probabilities": np.asarray(self.probabilities, dtype=np.float32)}
        if self.raw_probabilities is not None:
            obsm[f"{key}_probabilities_raw"] = np.asarray(self.raw_probabilities, dtype=np.float32)
        elif f"{key}_probabilities_raw" in adata.obsm and key in adata.uns:
            drop.append(f"obsm:{key}_probabilities_raw")  # from an earlier calibrated run under this key
        if self.embedding is not None:
            obsm[f"X_{key}"] = np.asarray(self.embedding, dtype=np.float32)
        uns = h5ad_safe({**self.params, "method": self.method, "classes": list(self.classes)})
        return _write(adata, obs, obsm, key, uns, drop, copy)


@dataclass
class ClusteringResult:
    """Cluster assignments (and, where the method maps them, cell types)."""

    obs_names: pd.Index
    clusters: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray | None = None
    embedding: np.ndarray | None = None
    cell_types: np.ndarray | None = None
    cluster_map: dict | None = None
    method: str = ""
    params: dict = field(default_factory=dict)

    def to_dataframe(self) -> pd.DataFrame:
        df = pd.DataFrame(
            {"cluster": self.clusters, "confidence": self.confidence},
            index=pd.Index(self.obs_names, name="cell"),
        )
        if self.cell_types is not None:
            df["cell_type"] = self.cell_types
        return df

    def to_adata(self, adata, key_added: str | None = None, *, copy: bool = False):
        """Write into ``adata`` (or a copy, returned when ``copy=True``); built first, written last."""
        key = key_added or self.method
        _check_obs_names(adata, self.obs_names)
        check_key(adata, key, self.method)
        clusters = np.asarray(self.clusters).astype(str)
        cats = sorted(pd.unique(clusters), key=lambda c: (len(c), c))
        obs = {
            key: pd.Categorical(clusters, categories=cats),
            f"{key}_confidence": np.asarray(self.confidence, dtype=np.float64),
        }
        if self.cell_types is not None:
            obs[f"{key}_cell_type"] = pd.Categorical(np.asarray(self.cell_types, dtype=object))
        obsm = {}
        if self.probabilities is not None:
            obsm[f"{key}_probabilities"] = np.asarray(self.probabilities, dtype=np.float32)
        if self.embedding is not None:
            obsm[f"X_{key}"] = np.asarray(self.embedding, dtype=np.float32)
        extra = {"cluster_map": {str(k): str(v) for k, v in self.cluster_map.items()}} if self.cluster_map else {}
        uns = h5ad_safe({**self.params, **extra, "method": self.method})
        return _write(adata, obs, obsm, key, uns, [], copy)


def _write(adata, obs: dict, obsm: dict, key: str, uns, drop: list, copy: bool):
    """Check shapes, then write (nothing is written when a check fails)."""
    for name, values in {**obs, **obsm}.items():
        if len(values) != adata.n_obs:
            raise ValueError(f"internal: {name} has {len(values)} rows for {adata.n_obs} cells; nothing was written.")
    if copy:
        adata = adata.copy()
    for col in drop:
        if col.startswith("obsm:"):
            del adata.obsm[col[5:]]
        else:
            del adata.obs[col]
    for name, values in obs.items():
        adata.obs[name] = values
    for name, values in obsm.items():
        adata.obsm[name] = values
    adata.uns[key] = uns
    return adata if copy else None
