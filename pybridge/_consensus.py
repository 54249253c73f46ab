"""A consensus call from several annotators trained on the same reference.

Each member is trained with its own defaults and the same seed; their calibrated
probabilities are averaged over a common class list; the label is the argmax of
the mean, the score its mean probability, and ``agreement`` the share of members
whose own top label is that label. A cell on which the members disagree and whose
mean score is below the rejection threshold of its label (the mean of the members'
per-class thresholds, which each member computes on its held-back reference
cells) becomes ``"Unassigned"``; with ``reject=False`` no cell is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._settings import logger
from .rejection import UNASSIGNED
from .result import AnnotationResult, check_key

#: the members used when none are named
DEFAULT_METHODS = ("scnym", "jind", "linear")
#: what the consensus keeps of each member's params
_MEMBER_PARAMS = ("config", "calibration", "timings")


@dataclass
class ConsensusResult(AnnotationResult):
    """An :class:`AnnotationResult` for the consensus, with each cell's ``agreement`` and the members' results."""

    agreement: np.ndarray | None = None
    members: dict[str, AnnotationResult] = field(default_factory=dict)

    def to_dataframe(self) -> pd.DataFrame:
        df = super().to_dataframe()
        df["agreement"] = self.agreement
        return df

    def member_columns(self) -> dict[str, np.ndarray]:
        """Each member's label (before its own rejection) and score: ``<member>`` and ``<member>_confidence``."""
        out = {}
        for m, res in self.members.items():
            out[m] = np.asarray(res.raw_labels, dtype=object)
            out[f"{m}_confidence"] = np.asarray(res.confidence, dtype=np.float64)
        return out

    def to_adata(self, adata, key_added: str | None = None, *, copy: bool = False):
        """Write the consensus under ``key_added``, plus ``obs[key + '_agreement']`` and each member's label and
        score (``obs[key + '_scnym']``, ``obs[key + '_scnym_confidence']``, ...)."""
        key = key_added or self.method
        out = super().to_adata(adata, key, copy=copy)
        target = out if copy else adata
        target.obs[f"{key}_agreement"] = np.asarray(self.agreement, dtype=np.float64)
        for col, values in self.member_columns().items():
            target.obs[f"{key}_{col}"] = pd.Categorical(values) if values.dtype == object else values
        return out


def check_methods(methods) -> tuple[str, ...]:
    """The member names, checked: at least two different registered annotation methods."""
    from .models._registry import get_method
    from .models._registry import methods as registered

    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(str(m) for m in methods)
    annotators = registered("annotation")
    for m in methods:
        get_method(m)  # unknown names: a clear error listing the registered ones
        if m not in annotators:
            raise ValueError(f"{m!r} is not an annotation method; consensus members: {', '.join(annotators)}.")
    if len(set(methods)) != len(methods):
        raise ValueError(f"A method is named twice in methods={list(methods)}.")
    if len(methods) < 2:
        raise ValueError(
            f"A consensus needs at least two methods, got {list(methods)}; for one method call it directly."
        )
    return methods


def combine(members: dict[str, AnnotationResult], *, reject: bool = True) -> ConsensusResult:
    """The consensus of results on the same cells: mean of the members' probabilities over the union of their
    classes, argmax label, the members' agreement, and rejection where they disagree and the score is low."""
    names = list(members)
    first = members[names[0]]
    classes = sorted(set().union(*(r.classes for r in members.values())))
    n, k = len(first.obs_names), len(classes)
    probs, thresholds, votes = np.zeros((n, k)), np.zeros(k), np.empty((len(names), n), dtype=object)
    for i, (m, res) in enumerate(members.items()):
        if not pd.Index(res.obs_names).equals(pd.Index(first.obs_names)):
            raise ValueError(f"internal: the {m} result is on other cells than the {names[0]} result.")
        cols = pd.Index(classes).get_indexer(res.classes)
        probs[:, cols] += np.asarray(res.probabilities, dtype=np.float64)
        thr = res.params.get("thresholds") or [0.0] * len(res.classes)
        thresholds[cols] += np.asarray(thr, dtype=np.float64)
        votes[i] = np.asarray(res.raw_labels, dtype=object)
    probs /= len(names)
    thresholds /= len(names)
    top = probs.argmax(axis=1)
    raw = np.asarray(classes, dtype=object)[top]
    score = probs[np.arange(n), top]
    agreement = (votes == raw[None, :]).mean(axis=0)
    labels = raw.copy()
    if reject:
        labels[(agreement < 1) & (score < thresholds[top])] = UNASSIGNED
    params = {
        "methods": names,
        "thresholds": [float(t) for t in thresholds],
        "reject": bool(reject),
        "members": {
            m: {k_: r.params.get(k_) for k_ in ("config", "calibration", "timings")} for m, r in members.items()
        },
    }
    return ConsensusResult(
        obs_names=pd.Index(first.obs_names),
        classes=classes,
        probabilities=probs,
        labels=labels,
        raw_labels=raw,
        confidence=score,
        method="consensus",
        rejection=bool(reject),
        params=params,
        agreement=agreement,
        members=dict(members),
    )


def compute_consensus(
    query,
    reference,
    *,
    methods=DEFAULT_METHODS,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    reject: bool = True,
    seed: int = 0,
    device: str = "auto",
    verbose: bool | None = None,
    options: dict[str, dict] | None = None,
) -> ConsensusResult:
    """Train each of ``methods`` on ``reference`` (its defaults, ``seed``), annotate ``query``, and combine.

    ``options`` maps a member name to its own options, e.g. ``{"scnym": {"n_epochs": 50}}``.
    """
    from .models._registry import get_method

    methods = check_methods(methods)
    options = dict(options or {})
    unknown = sorted(set(options) - set(methods))
    if unknown:
        raise ValueError(f"options for {unknown}, which are not among methods={list(methods)}.")
    t0, members = time.perf_counter(), {}
    for m in methods:
        members[m] = get_method(m).compute(
            query,
            reference,
            labels_key=labels_key,
            layer=layer,
            reference_layer=reference_layer,
            seed=seed,
            device=device,
            verbose=verbose,
            **options.get(m, {}),
        )
    result = combine(members, reject=reject)
    result.params["timings"] = {"total_s": time.perf_counter() - t0}
    logger.info("consensus of %s: %d cells in %.1fs", ", ".join(methods), len(result.labels), time.perf_counter() - t0)
    return result


def consensus(
    query,
    reference,
    *,
    methods=DEFAULT_METHODS,
    labels_key: str = "cell_type",
    layer: str | None = None,
    reference_layer: str | None = None,
    key_added: str = "consensus",
    reject: bool = True,
    seed: int = 0,
    device: str = "auto",
    copy: bool = False,
    verbose: bool | None = None,
    options: dict[str, dict] | None = None,
):
    """Annotate ``query`` with several annotators and their consensus.

    Writes ``obs[key_added]`` (the consensus label, ``"Unassigned"`` where the
    members disagree and the mean score is low), ``obs[key_added + '_confidence']``
    (the mean probability of that label), ``obs[key_added + '_agreement']`` (share
    of members voting for it), ``obsm[key_added + '_probabilities']`` (the mean of
    the members' calibrated probabilities) and ``uns[key_added]``; each member's
    own outputs go under its name (``obs['scnym']``, ``obs['jind']``, ...).
    Returns the annotated copy when ``copy=True``, else ``None``.
    """
    from .data import check_anndata

    check_anndata(query, "query")
    check_anndata(reference, "reference")
    methods = check_methods(methods)
    check_key(query, key_added, "consensus", warn=False)
    result = compute_consensus(
        query,
        reference,
        methods=methods,
        labels_key=labels_key,
        layer=layer,
        reference_layer=reference_layer,
        reject=reject,
        seed=seed,
        device=device,
        verbose=verbose,
        options=options,
    )
    return result.to_adata(query, key_added, copy=copy)
