"""The estimator protocol every method stands on.

:class:`Estimator` owns what all five share: the frozen config (paper defaults,
keyword overrides checked by type), the seed, the device and verbosity, fit
bookkeeping (``fit_info_``, ``history_``), provenance for results
(:meth:`Estimator._base_params`, one package version) and saving/loading through
:mod:`pybridge._io` (safetensors + JSON, never a pickle).

On top of it:

* :class:`Annotator` (scNym, JIND): a classifier trained on a labelled
  reference; ``predict`` gives an :class:`~pybridge.AnnotationResult` with
  per-class probabilities, the shared rejection rule and gene alignment;
  ``annotate`` runs whatever per-query step the method has, then predicts.
* :class:`Clusterer` (CICL, NMF transfer, ItClust): ``fit`` learns from the
  data (and a reference where the method uses one), ``fit_predict`` clusters the
  data it was fitted on, ``predict`` / ``cluster`` assign new cells with a fitted
  or loaded model and give a :class:`~pybridge.ClusteringResult`.

A subclass sets ``method`` and ``config_cls`` and implements ``fit``, its
prediction, ``_state`` (tensors to save), ``_meta`` (JSON metadata to save) and
``_load_state`` (restore both).
"""

from __future__ import annotations

import dataclasses
import numbers
import time
import types
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .. import _io
from .._settings import logger, resolve_device, resolve_verbose
from ..data import check_finite_labels, gene_overlap, get_counts, get_labels
from ..rejection import (
    UNASSIGNED,
    class_thresholds,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reject,
    temperature_scale,
)
from ..result import AnnotationResult


def make_config(config_cls, config=None, overrides: dict | None = None):
    """Build a frozen config from a config object, a dict, or keyword overrides.

    Unknown keys raise ``TypeError`` naming the valid ones.
    """
    overrides = dict(overrides or {})
    if config is None:
        base = {}
    elif isinstance(config, config_cls):
        base = dataclasses.asdict(config)
    elif isinstance(config, dict):
        base = dict(config)
    else:
        raise TypeError(f"config must be a {config_cls.__name__} or a dict, not {type(config).__name__}.")
    base.update(overrides)
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(base) - valid)
    if unknown:
        raise TypeError(
            f"Unknown {config_cls.__name__} option(s): {', '.join(unknown)}. Valid options: {', '.join(sorted(valid))}."
        )
    hints = typing.get_type_hints(config_cls)
    given = set(overrides) | (set(config) if isinstance(config, dict) else set())  # defaults are right already
    for name in given:
        base[name] = _checked_option(config_cls.__name__, name, base[name], hints.get(name))
    return config_cls(**base)


def _checked_option(owner: str, name: str, value, hint):
    """``value`` as the type ``hint`` declares (a whole float for an int, an int for a float), or an
    :class:`OptionTypeError` that names the option, the expected type and what was given."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for tp in allowed:
        if tp is bool and isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (bool, np.bool_)):
            continue  # True is an int in Python, but not a number of epochs
        if tp is int and isinstance(value, numbers.Integral):
            return int(value)
        if tp is int and isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        if tp is float and isinstance(value, numbers.Real):
            return float(value)
        if tp is str and isinstance(value, str):
            return value
        if tp not in (bool, int, float, str, type(None)):  # tuples and the like: the config checks them itself
            return value
    words = {int: "an integer", float: "a number", bool: "True or False", str: "a string", type(None): "None"}
    want = " or ".join(words.get(t, getattr(t, "__name__", str(t))) for t in allowed)
    raise OptionTypeError(f"{owner} option {name} must be {want}, not {value!r} ({type(value).__name__}).")


class OptionTypeError(TypeError, ValueError):
    """An option of the wrong type: a ``TypeError``, and a ``ValueError`` as every other bad input."""


class Estimator:
    """Config, seed, device, fit bookkeeping, provenance and persistence shared by every method."""

    method: str = ""
    kind: str = ""
    config_cls: type = object
    #: what "not fitted" tells the user to call
    _fit_hint: str = "fit(...)"

    def __init__(self, config=None, *, seed: int = 0, device: str = "auto", verbose: bool | None = None, **overrides):
        self.config = make_config(self.config_cls, config, overrides)
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.verbose = resolve_verbose(verbose)
        self.history_: dict = {}
        self.fit_info_: dict = {}

    def _is_fitted(self) -> bool:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise RuntimeError(
                f"This {type(self).__name__} is not fitted yet; call {self._fit_hint} or load(dir) first."
            )

    def _base_params(self) -> dict:
        """Provenance every result carries first: the config, the seed and the device."""
        return {"config": dataclasses.asdict(self.config), "seed": self.seed, "device": str(self.device)}

    @staticmethod
    def _read(adata, layer, what):
        X = get_counts(adata, layer, what=what)
        return X, pd.Index(adata.var_names).astype(str)

    def _read_reference(self, reference, labels_key, layer):
        X, genes = self._read(reference, layer, "reference")
        labels = get_labels(reference, labels_key, what="reference")
        mask = check_finite_labels(labels)
        return X, genes, labels, mask

    # ------------------------------------------------------------ persistence
    def _state(self) -> dict[str, torch.Tensor]:
        """The tensors a saved model holds."""
        raise NotImplementedError

    def _meta(self) -> dict:
        """The JSON metadata a saved model holds (besides what :mod:`pybridge._io` adds)."""
        raise NotImplementedError

    def _restore(self, meta: dict) -> None:
        """Restore what the metadata alone holds (before :meth:`_load_state`)."""

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Restore a fitted model from what :meth:`_state` and :meth:`_meta` saved."""
        raise NotImplementedError

    @classmethod
    def _saved_config(cls, meta: dict) -> dict:
        """The saved config options this version knows (older files may lack new options: defaults apply)."""
        valid = {f.name for f in dataclasses.fields(cls.config_cls)}
        return {k: v for k, v in dict(meta["config"]).items() if k in valid}

    def save(self, path) -> Path:
        """Write weights (safetensors) and metadata (JSON) to directory ``path``."""
        self._check_fitted()
        return _io.save_model(path, self.method, self._state(), self._meta())

    @classmethod
    def load(cls, path, *, device: str = "auto", verbose: bool | None = None, **overrides):
        """Load a model saved with :meth:`save` (never unpickles).

        ``overrides`` may change prediction-time options (e.g. ``reject``).
        """
        dev = resolve_device(device)
        tensors, meta = _io.load_model(path, cls.method, device="cpu")
        obj = cls(cls._saved_config(meta), seed=meta.get("seed", 0), device=str(dev), verbose=verbose, **overrides)
        obj.fit_info_ = meta.get("fit_info", {})
        obj._restore(meta)
        try:
            obj._load_state(tensors, meta)
        except (RuntimeError, KeyError) as err:  # torch: size mismatch / missing or unexpected keys
            raise _io.config_mismatch(path, err) from None
        logger.info("loaded %s model from %s (%d genes)", cls.method, path, len(meta["genes"]))
        return obj


class Clusterer(Estimator):
    """Transfer or unsupervised clustering: ``fit`` then ``fit_predict`` / ``predict`` / ``cluster``."""

    kind = "clustering"
    _fit_hint = "fit(adata)"

    def fit_predict(self, *args, **kwargs):
        """Fit, then return the clustering of the data the model was fitted on."""
        raise NotImplementedError

    def predict(self, adata, *, layer: str | None = None, **options):
        raise NotImplementedError

    def cluster(self, adata, *, layer: str | None = None, **options):
        """Cluster ``adata`` with this fitted (or loaded) model: what ``pybridge predict --model`` calls."""
        return self.predict(adata, layer=layer, **options)


class Annotator(Estimator):
    """Train once on a labelled reference, annotate many queries."""

    kind = "annotation"
    _fit_hint = "fit(reference)"

    def __init__(self, config=None, *, seed: int = 0, device: str = "auto", verbose: bool | None = None, **overrides):
        super().__init__(config, seed=seed, device=device, verbose=verbose, **overrides)
        self.genes_: pd.Index | None = None
        self.classes_: list[str] | None = None
        self.thresholds_: np.ndarray | None = None
        #: softmax temperature fitted on the held-back reference cells (None: not fitted, as in older models)
        self.temperature_: float | None = None
        self.calibration_: dict | None = None

    def _is_fitted(self) -> bool:
        return self.genes_ is not None and self.classes_ is not None

    # ------------------------------------------------------------- calibration
    @property
    def calibration_enabled(self) -> bool:
        return bool(getattr(self.config, "calibrate", False))

    def _fit_validation(self, val_probabilities: np.ndarray | None, val_labels: np.ndarray | None) -> None:
        """What the held-back reference cells decide after training: the temperature, then (on the calibrated
        scores when calibration is on) the rejection thresholds."""
        self._fit_calibration(val_probabilities, val_labels)
        self._fit_rejection(None if val_probabilities is None else self._calibrated(val_probabilities))

    def _fit_calibration(self, val_probabilities: np.ndarray | None, val_labels: np.ndarray | None) -> None:
        """Temperature scaling (Guo et al. 2017): the T > 0 that minimises the validation cells' NLL of
        ``softmax(log(p) / T)``. One parameter, so the argmax and with it every label stay the same. It is
        fitted whether or not ``calibrate`` is on, so the validation ECE before and after is always reported;
        with fewer than 10 validation cells, or all of one class, T stays 1."""
        n = 0 if val_probabilities is None else len(val_probabilities)
        if n < 10 or len(np.unique(val_labels)) < 2:
            self.temperature_ = 1.0
            self.calibration_ = {"temperature": 1.0, "n_validation_cells": int(n), "note": "too few validation cells"}
            return
        p, y = np.asarray(val_probabilities, dtype=np.float64), np.asarray(val_labels)
        t = fit_temperature(np.log(np.clip(p, 1e-300, None)), y)
        q = temperature_scale(p, t)
        correct = p.argmax(axis=1) == y
        self.temperature_ = t
        self.calibration_ = {
            "temperature": t,
            "n_validation_cells": int(n),
            "validation_ece_before": expected_calibration_error(p.max(axis=1), correct),
            "validation_ece_after": expected_calibration_error(q.max(axis=1), correct),
            "validation_nll_before": negative_log_likelihood(p, y),
            "validation_nll_after": negative_log_likelihood(q, y),
        }

    def _calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """The probabilities with the fitted temperature applied (unchanged when calibration is off)."""
        if not self.calibration_enabled or self.temperature_ is None:
            return probabilities
        return temperature_scale(probabilities, self.temperature_)

    # ------------------------------------------------------------- to override
    def _transform(self, X: sp.csr_matrix, genes: pd.Index, target_genes: pd.Index) -> sp.csr_matrix:
        raise NotImplementedError

    def _predict_arrays(self, X) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (probabilities, embedding) for model-ready rows ``X``."""
        raise NotImplementedError

    # --------------------------------------------------------------- rejection
    def _fit_rejection(self, val_probabilities: np.ndarray | None) -> None:
        """Per-class thresholds from validation predictions (always computed; used when enabled)."""
        if val_probabilities is None or len(val_probabilities) == 0:
            self.thresholds_ = np.zeros(len(self.classes_))
        else:
            self.thresholds_ = class_thresholds(val_probabilities, self.config.outlier_fraction)

    def _rejected(self, probs: np.ndarray, embedding: np.ndarray | None) -> tuple[np.ndarray, dict]:
        """Mask of cells to label Unassigned when rejection is on (default: the per-class probability thresholds),
        and what the rule applied, for the result's params."""
        return reject(probs, self.thresholds_), {}

    @property
    def rejection_enabled(self) -> bool:
        return bool(getattr(self.config, "reject", False))

    # ------------------------------------------------------------------ public
    def prepare_query(self, query, layer: str | None = None):
        """Validated, transformed query aligned to the model genes, with overlap info."""
        self._check_fitted()
        X, genes = self._read(query, layer, "query")
        overlap = gene_overlap(self.genes_, genes, what="query")
        return self._transform(X, genes, self.genes_), overlap

    def predict(self, query, *, layer: str | None = None) -> AnnotationResult:
        """Annotate ``query`` (AnnData with raw counts in ``X`` or ``layer``)."""
        t0 = time.perf_counter()
        Xq, overlap = self.prepare_query(query, layer)
        raw, embedding = self._predict_arrays(Xq)
        return self._result(query.obs_names, raw, embedding, overlap, time.perf_counter() - t0)

    def annotate(self, query, *, layer: str | None = None) -> AnnotationResult:
        """Annotate a query with this trained model, doing whatever per-query step the method has.

        This is what ``pybridge predict``, ``RunScNym(x, model)`` and the other
        saved-model paths call. For most methods it is :meth:`predict`; JIND
        first aligns the model to a query it was not aligned to (see
        :meth:`pybridge.JIND.annotate`).
        """
        return self.predict(query, layer=layer)

    def _result(self, obs_names, raw_probs, embedding, overlap, predict_seconds) -> AnnotationResult:
        """The result for the model's raw probabilities ``raw_probs``: calibrated, labelled, rejected."""
        probs = self._calibrated(raw_probs)
        calibrated = probs is not raw_probs
        classes = np.asarray(self.classes_, dtype=object)
        raw = classes[probs.argmax(axis=1)]
        labels = raw.copy()
        applied = {}
        if self.rejection_enabled:
            rejected, applied = self._rejected(probs, embedding)
            labels[rejected] = UNASSIGNED
        params = {
            **self._base_params(),
            "gene_overlap": overlap,
            "timings": {**self.fit_info_.get("timings", {}), "predict_s": float(predict_seconds)},
            "training": {k: v for k, v in self.fit_info_.items() if k != "timings"},
            # a list aligned with the classes: class names may hold '/' and cannot be .h5ad keys
            "thresholds": None if self.thresholds_ is None else [float(t) for t in self.thresholds_],
            "calibration": None if self.calibration_ is None else {**self.calibration_, "applied": calibrated},
            **applied,
            "version": _version(),
        }
        return AnnotationResult(
            obs_names=pd.Index(obs_names),
            classes=list(self.classes_),
            probabilities=probs,
            labels=labels,
            raw_labels=raw,
            confidence=probs.max(axis=1).astype(np.float64),
            embedding=embedding,
            method=self.method,
            rejection=self.rejection_enabled,
            params=params,
            raw_probabilities=raw_probs if calibrated else None,
        )

    def _meta(self) -> dict:
        return {
            "config": dataclasses.asdict(self.config),
            "genes": list(self.genes_),
            "classes": list(self.classes_),
            "thresholds": None if self.thresholds_ is None else [float(t) for t in self.thresholds_],
            "seed": self.seed,
            "fit_info": self.fit_info_,
            **self._calibration_meta(),
            **self._extra_meta(),
        }

    def _calibration_meta(self) -> dict:
        """The temperature and its validation report (absent for a model fitted without validation cells)."""
        return {} if self.calibration_ is None else {"temperature": self.temperature_, "calibration": self.calibration_}

    def _extra_meta(self) -> dict:
        return {}

    def _restore(self, meta: dict) -> None:
        """Genes, classes and rejection thresholds from a saved model's metadata."""
        self.genes_ = pd.Index(meta["genes"]).astype(str)
        self.classes_ = list(meta["classes"])
        self.thresholds_ = None if meta.get("thresholds") is None else np.asarray(meta["thresholds"], dtype=float)
        self.temperature_ = meta.get("temperature")  # absent in models saved before calibration: none applied
        self.calibration_ = meta.get("calibration")


def _version() -> str:
    from .. import __version__

    return __version__
