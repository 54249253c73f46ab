"""Plots of an annotation stored in an AnnData: can its confidence be trusted, and where does it cut?

:func:`reliability`: a reliability diagram (accuracy against confidence, binned) with the
expected calibration error, against known true labels.
:func:`confidence`: the confidence of the cells of each predicted type, split into correct
and wrong when true labels are known, with each class's rejection threshold.

Both read what :meth:`pybridge.AnnotationResult.to_adata` wrote under ``key`` (``obs[key]``,
``obs[key + "_confidence"]``, ``obs[key + "_raw"]`` where rejection ran, ``uns[key]``),
change nothing in ``adata`` and return a :class:`matplotlib.figure.Figure`. Figures are
built without pyplot (nothing is left open or shown): save one with ``fig.savefig(path)``;
in Jupyter it displays as the cell's value. Pass ``ax=`` to draw into an axes of your own.
Needs matplotlib (``pip install matplotlib``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .rejection import UNASSIGNED, expected_calibration_error

__all__ = ["confidence", "reliability"]

CORRECT_COLOR = "#4c72b0"
WRONG_COLOR = "#dd8452"
NEUTRAL_COLOR = "#8c8c8c"
THRESHOLD_COLOR = "#c44e52"


@dataclass
class _Annotation:
    key: str
    predicted: np.ndarray  # the label before rejection where rejection ran (obs[key + "_raw"]), else obs[key]
    labels: np.ndarray  # obs[key]: "Unassigned" for rejected cells
    confidence: np.ndarray
    classes: list[str]
    thresholds: np.ndarray | None  # per class, where they are the rule that rejected cells
    raw: bool


def _annotation(adata, key) -> _Annotation:
    obs = adata.obs
    if not isinstance(key, str) or key not in obs.columns or f"{key}_confidence" not in obs.columns:
        stored = [c for c in obs.columns if isinstance(c, str) and f"{c}_confidence" in obs.columns]
        what = (
            f"adata.obs has no column {key!r}"
            if not isinstance(key, str) or key not in obs.columns
            else f"adata.obs has {key!r} but no {key + '_confidence'!r}"
        )
        found = f"annotations stored here: {stored}" if stored else "this object holds no pybridge annotation"
        raise ValueError(f"No annotation under key {key!r}: {what} ({found}). Pass the key_added of the run.")
    labels = obs[key].astype(str).to_numpy()
    raw = f"{key}_raw" in obs.columns
    predicted = obs[f"{key}_raw"].astype(str).to_numpy() if raw else labels
    conf = pd.to_numeric(obs[f"{key}_confidence"], errors="coerce").to_numpy(dtype=float)
    params = adata.uns.get(key)
    params = params if isinstance(params, dict) else {}
    classes = params.get("classes")
    if classes is None:
        classes = sorted(set(predicted) - {UNASSIGNED})
    classes = [str(c) for c in np.asarray(classes, dtype=object).ravel()]
    thresholds = None
    thr = params.get("thresholds")
    # marked only where they decided: rejection ran and by confidence (scNym's reject_score="distance"
    # thresholds a distance in the embedding, not this score)
    if raw and thr is not None and str(params.get("reject_score", "confidence")) == "confidence":
        thr = np.asarray(thr, dtype=float).ravel()
        if len(thr) == len(classes):
            thresholds = thr
    return _Annotation(key, predicted, labels, conf, classes, thresholds, raw)


def _truth(adata, truth_key, ann: _Annotation, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """True labels as strings and where they are known; a clear error for a missing or unrelated column."""
    if truth_key is None:
        raise ValueError(
            f"{fn}() needs truth_key=, the adata.obs column with the true labels of these cells "
            "(accuracy cannot be measured without them)."
        )
    if not isinstance(truth_key, str) or truth_key not in adata.obs.columns:
        raise ValueError(
            f"truth_key={truth_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)[:20]})."
        )
    col = adata.obs[truth_key]
    truth = col.astype(str).to_numpy()
    known = col.notna().to_numpy()
    labels = set(truth[known])
    if not labels & (set(ann.classes) | (set(ann.predicted) - {UNASSIGNED})):
        raise ValueError(
            f"obs[{truth_key!r}] shares no labels with the predictions under {ann.key!r} "
            f"(true labels e.g. {sorted(labels)[:5]}, predicted classes e.g. {ann.classes[:5]}); "
            "pass the column with the same cell-type names as the reference."
        )
    return truth, known


def _new_figure(figsize, nrows=1, height_ratios=None):
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - matplotlib is an optional dependency
        raise ImportError("pybridge.pl needs matplotlib: pip install matplotlib") from err
    fig = Figure(figsize=figsize, layout="constrained")
    if nrows == 1:
        return fig, [fig.add_subplot()]
    axes = fig.subplots(nrows, 1, sharex=True, gridspec_kw={"height_ratios": height_ratios})
    return fig, list(axes)


def reliability(adata, key: str, truth_key: str | None = None, *, n_bins: int = 10, ax=None):
    """Reliability diagram of the annotation under ``key``: is a confidence of 0.8 right 80% of the time?

    The cells are binned by confidence (``obs[key + "_confidence"]``, ``n_bins`` equal-width bins
    on [0, 1]); each bin's accuracy is drawn as a bar and as a point at the bin's mean confidence
    (point area ~ number of cells), against the diagonal of perfect calibration. The title gives
    the expected calibration error (ECE: the cell-weighted mean gap between accuracy and
    confidence over the bins, :func:`pybridge.rejection.expected_calibration_error`). A panel
    below counts the cells per bin (not drawn when ``ax`` is given).

    Scored cells: those whose true type is one of the reference's classes (a type the reference
    lacks cannot be predicted right; how well such cells are rejected shows in :func:`confidence`).
    Rejected cells are scored with their label before rejection (``obs[key + "_raw"]``), so the
    diagram judges the classifier's confidence itself, not the rejection rule.

    Parameters
    ----------
    adata
        AnnData holding an annotation written by pybridge (``pybridge.scnym``, ``pybridge.jind``,
        ``AnnotationResult.to_adata``).
    key
        The ``key_added`` of that run.
    truth_key
        The ``adata.obs`` column with the true labels (required).
    n_bins
        Number of equal-width confidence bins.
    ax
        A matplotlib axes to draw into (one panel, no count panel); by default a new figure.

    Returns
    -------
    The :class:`matplotlib.figure.Figure` (``ax.figure`` when ``ax`` is given). ``adata`` is not changed.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, not {n_bins!r}.")
    n_bins = int(n_bins)
    ann = _annotation(adata, key)
    truth, known = _truth(adata, truth_key, ann, "reliability")
    in_ref = np.isin(truth, ann.classes)
    seen = known & in_ref & np.isfinite(ann.confidence) & (ann.predicted != UNASSIGNED)
    n_unseen = int((known & ~in_ref).sum())
    if not seen.any():
        raise ValueError(
            f"No cell has both a finite confidence and a true label (obs[{truth_key!r}]) of one of the classes "
            f"under {key!r}: nothing to score."
        )
    conf = np.clip(ann.confidence[seen], 0.0, 1.0)
    correct = ann.predicted[seen] == truth[seen]
    ece = expected_calibration_error(conf, correct, n_bins)

    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)  # the binning of expected_calibration_error
    counts = np.bincount(bins, minlength=n_bins)
    nonempty = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(bins, weights=correct.astype(float), minlength=n_bins) / counts
        mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / counts
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    width = 1.0 / n_bins

    if ax is None:
        fig, axes = _new_figure((5.0, 5.6), nrows=2, height_ratios=[3, 1])
        main, below = axes
    else:
        fig, main, below = ax.figure, ax, None
    main.bar(
        edges[:-1][nonempty],
        acc[nonempty],
        width=width,
        align="edge",
        color=CORRECT_COLOR,
        alpha=0.35,
        edgecolor=CORRECT_COLOR,
        label="accuracy per bin",
    )
    sizes = 20 + 280 * counts[nonempty] / max(int(counts.max()), 1)
    main.scatter(
        mean_conf[nonempty], acc[nonempty], s=sizes, color=CORRECT_COLOR, edgecolor="white", zorder=3, clip_on=False,
        label="bin mean confidence (area ~ cells)",
    )  # fmt: skip
    main.plot([0, 1], [0, 1], linestyle="--", color=NEUTRAL_COLOR, label="perfect calibration")
    main.set_xlim(0, 1)
    main.set_ylim(0, 1.02)
    main.set_ylabel("accuracy")
    main.legend(loc="upper left", fontsize="small", frameon=False)
    title = f"{key}: ECE = {ece:.3f} over {int(seen.sum())} cells"
    if n_unseen:
        title += f"\n({n_unseen} cells of types not in the reference left out)"
    main.set_title(title, fontsize="medium")
    if below is not None:
        below.bar(edges[:-1], counts, width=width, align="edge", color=NEUTRAL_COLOR, edgecolor="white")
        for x, n in zip(edges[:-1][nonempty] + width / 2, counts[nonempty] if n_bins <= 20 else []):  # small bins
            below.annotate(
                str(n), (x, n), xytext=(0, 1), textcoords="offset points", ha="center", va="bottom", fontsize="x-small"
            )
        below.set_ylim(0, counts.max() * 1.25 if counts.max() else 1)
        below.set_ylabel("cells")
        below.set_xlabel(f"confidence (obs['{key}_confidence'])")
    else:
        main.set_xlabel(f"confidence (obs['{key}_confidence'])")
    return fig


def confidence(adata, key: str, truth_key: str | None = None, *, ax=None):
    """Confidence of the cells of each predicted type, with each class's rejection threshold.

    One violin per predicted type (the label before rejection where rejection ran, so a class's
    whole distribution shows and its threshold cuts it: the cells below the red mark are the ones
    labelled ``"Unassigned"``), types ordered by their number of cells. The threshold of each
    class (``uns[key]["thresholds"]``) is marked where rejection ran by confidence (not for
    scNym's ``reject_score="distance"``, whose thresholds are on a distance in the embedding).

    With ``truth_key``, each type's cells are split into correctly and wrongly predicted ones
    (two colours; a cell whose true type the reference lacks counts as wrong), so one can see
    whether a threshold separates them. Cells without a true label are left out then.

    Parameters
    ----------
    adata
        AnnData holding an annotation written by pybridge.
    key
        The ``key_added`` of that run.
    truth_key
        Optional ``adata.obs`` column with the true labels.
    ax
        A matplotlib axes to draw into; by default a new figure.

    Returns
    -------
    The :class:`matplotlib.figure.Figure` (``ax.figure`` when ``ax`` is given). ``adata`` is not changed.
    """
    from matplotlib.patches import Patch

    ann = _annotation(adata, key)
    truth, known = (None, None) if truth_key is None else _truth(adata, truth_key, ann, "confidence")
    keep = np.isfinite(ann.confidence)
    if truth is not None:
        keep &= known
    group = ann.predicted[keep]
    conf = ann.confidence[keep]
    counts = pd.Series(group).value_counts()
    order = sorted(counts.index, key=lambda g: (g == UNASSIGNED, -counts[g], g))
    if ax is None:
        fig, (ax,) = _new_figure((max(5.5, 3.2 + 0.7 * len(order)), 4.4))
    else:
        fig = ax.figure

    if truth is None:
        splits = [("cells", np.ones(len(group), bool), 0.0, 0.8, NEUTRAL_COLOR)]
    else:
        ok = group == truth[keep]
        splits = [
            (f"correct ({int(ok.sum())})", ok, -0.2, 0.38, CORRECT_COLOR),
            (f"wrong ({int((~ok).sum())})", ~ok, 0.2, 0.38, WRONG_COLOR),
        ]
    handles = []
    for name, mask, offset, width, color in splits:
        data, positions, few = [], [], []
        for i, g in enumerate(order):
            v = conf[mask & (group == g)]
            if len(np.unique(v)) >= 2:
                data.append(v)
                positions.append(i + offset)
            if 0 < len(v) < 10 or (len(v) and len(np.unique(v)) < 2):
                few.append((i + offset, v))
        if data:
            parts = ax.violinplot(data, positions=positions, widths=width, showmedians=True, showextrema=False)
            for body in parts["bodies"]:
                body.set_facecolor(color)
                body.set_edgecolor(color)
                body.set_alpha(0.6)
            parts["cmedians"].set_color("black")
            parts["cmedians"].set_linewidth(1)
        for x, v in few:  # too few cells for a density: the cells themselves
            ax.scatter(np.full(len(v), x), v, s=12, color=color, edgecolor="black", linewidth=0.3, zorder=3)
        handles.append(Patch(facecolor=color, alpha=0.6, label=name))

    title = f"{key}: confidence per predicted type"
    if ann.thresholds is not None:
        index = {c: i for i, c in enumerate(ann.classes)}
        xs = [i for i, g in enumerate(order) if g in index]
        ys = [ann.thresholds[index[g]] for g in order if g in index]
        if xs:
            lines = ax.hlines(ys, np.asarray(xs) - 0.45, np.asarray(xs) + 0.45, colors=THRESHOLD_COLOR,
                              linewidth=2, zorder=4, label="rejection threshold")  # fmt: skip
            handles.append(lines)
    if ann.raw:
        n_rej = int((ann.labels[keep] == UNASSIGNED).sum())
        title += f"\n{n_rej} of {int(keep.sum())} cells ({n_rej / max(int(keep.sum()), 1):.1%}) rejected as Unassigned"
    ax.set_xticks(range(len(order)))
    rotate = len(order) > 4 or max((len(g) for g in order), default=0) > 10
    ax.set_xticklabels(
        [f"{g} ({counts[g]})" for g in order], rotation=35 if rotate else 0, ha="right" if rotate else "center"
    )
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel(f"confidence (obs['{key}_confidence'])")
    ax.set_xlabel("predicted type, before rejection (cells)" if ann.raw else "predicted type (cells)")
    ax.set_title(title, fontsize="medium")
    if len(handles) > 1:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False)
    return fig
