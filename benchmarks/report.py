"""Markdown results page and PNG plots from the harness's results.csv.

    python -m benchmarks report [--out benchmarks/out/full] [--results-md benchmarks/RESULTS.md]

:func:`write_report` writes the page as a sequence of sections, one function
each (``*_section``, each returning the section's lines). The tool table comes
from :mod:`benchmarks.tools`, number formatting from :mod:`benchmarks.formatting`
and the machine description from :mod:`benchmarks.environment`; this module
imports the harness only in :func:`main` (to collect a run's rows) and never the
other way round.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .environment import machine, versions, was_loaded  # noqa: F401 (machine, versions: also read from here)
from .formatting import fmt, md_table
from .tools import TOOLS, TRANSFER_CLUSTERERS, label_of, tool_applies, tool_order

_MERGE_REASON = "run side by side to finish more of the suite on the loaded machine"

ROOT = Path(__file__).resolve().parents[1]
TIE = 0.005  # differences in accuracy / ARI below this count as ties
#: metric columns every table may show: added as NaN where a run has none
METRIC_COLUMNS = (
    "acc",
    "macro_f1",
    "acc_kept",
    "rej_seen",
    "rej_unseen",
    "auroc_unseen",
    "ece",
    "ari",
    "nmi",
    "seconds",
    "wall_s",
    "peak_rss_mb",
    "k_found",
)


# ---------------------------------------------------------------- tables
def ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "ok") & (df["device"].fillna("CPU") == "CPU")]


def annotation_frame(df):
    d = ok_rows(df)
    return d[(d["kind"] == "transfer") & d["tool"].map(lambda t: TOOLS[t].annotation if t in TOOLS else False)]


def means(d: pd.DataFrame, cols: list) -> pd.DataFrame:
    g = d.groupby("tool")
    m = g[cols].mean(numeric_only=True)
    m.insert(0, "tasks", g.size())
    m = m.reindex([t for t in tool_order(d) if t in m.index])
    m.insert(0, "tool_label", [label_of(t) for t in m.index])
    return m.reset_index()


def wins(d: pd.DataFrame, metric: str, ours: list, peers: list) -> pd.DataFrame:
    """Per (pybridge method, peer): mean difference of ``metric`` over the tasks both finished, and W/L/T counts."""
    rows = []
    piv = d.pivot_table(index="task", columns="tool", values=metric)
    for a in ours:
        for b in peers:
            if a not in piv or b not in piv:
                continue
            both = piv[[a, b]].dropna()
            if both.empty:
                continue
            diff = both[a] - both[b]
            rows.append(
                {
                    "pybridge": label_of(a),
                    "peer": label_of(b),
                    "tasks": len(both),
                    "mean_diff": diff.mean(),
                    "wins": int((diff > TIE).sum()),
                    "losses": int((diff < -TIE).sum()),
                    "ties": int((diff.abs() <= TIE).sum()),
                    "max_gain": diff.max(),
                    "max_loss": diff.min(),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- plots


def _grouped_bars(ax, piv, tools, cmap, *, rotation, fontsize):
    """One bar per tool in each task's group (``piv``: tasks x tools); pybridge's bars are outlined."""
    w = 0.8 / max(1, len(tools))
    x = np.arange(len(piv.index))
    for i, t in enumerate(tools):
        ax.bar(
            x + (i - (len(tools) - 1) / 2) * w,
            piv[t].to_numpy(),
            w,
            label=label_of(t),
            color=cmap(i % 10),
            edgecolor="black" if t.startswith("pybridge") else "none",
            linewidth=0.6,
        )
    ax.set_xticks(x)
    ax.set_xticklabels(list(piv.index), rotation=rotation, ha="right", fontsize=fontsize)


def plots(df: pd.DataFrame, rel: pd.DataFrame | None, plot_dir: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    a = annotation_frame(df)
    cmap = plt.get_cmap("tab10")
    if not a.empty:
        tools = tool_order(a)
        tasks = list(dict.fromkeys(a["task"]))
        piv = a.pivot_table(index="task", columns="tool", values="acc").reindex(index=tasks, columns=tools)
        fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(tasks) + 4), 4.2))
        _grouped_bars(ax, piv, tools, cmap, rotation=30, fontsize=8)
        lo = np.nanmin(piv.to_numpy()) if np.isfinite(piv.to_numpy()).any() else 0
        ax.set_ylim(max(0.0, min(0.5, lo - 0.05)), 1.0)
        ax.set_ylabel("accuracy (shared types, before rejection)")
        ax.set_title("Accuracy per task and tool (pybridge outlined)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(plot_dir / "accuracy_per_task.png", dpi=90)
        plt.close(fig)
        out["accuracy"] = "accuracy_per_task.png"

        m = means(a, ["acc", "seconds"])
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for i, r in m.iterrows():
            ax.scatter(
                r["seconds"],
                r["acc"],
                s=50,
                color=cmap(i % 10),
                edgecolor="black" if r["tool"].startswith("pybridge") else "none",
            )
            ax.annotate(
                r["tool_label"], (r["seconds"], r["acc"]), fontsize=7, xytext=(4, 3), textcoords="offset points"
            )
        ax.set_xscale("log")
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("mean seconds per task (tool call, CPU; shared machine)")
        ax.set_ylabel("mean accuracy over tasks")
        ax.set_title("Time vs accuracy (annotation tasks)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(plot_dir / "time_vs_accuracy.png", dpi=90)
        plt.close(fig)
        out["time"] = "time_vs_accuracy.png"

    if rel is not None and not rel.empty:
        g = rel.groupby(["tool", "bin"])[["n", "correct", "conf_sum"]].sum().reset_index()
        tools = [t for t in tool_order(df) if t in set(g["tool"])]
        fig, ax = plt.subplots(figsize=(6, 5))
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
        for i, t in enumerate(tools):
            s = g[(g["tool"] == t) & (g["n"] >= 10)]
            ax.plot(
                s["conf_sum"] / s["n"],
                s["correct"] / s["n"],
                marker="o",
                ms=3,
                color=cmap(i % 10),
                label=label_of(t),
                lw=1.8 if t.startswith("pybridge") else 1.0,
            )
        ax.set_xlabel("confidence (bin mean)")
        ax.set_ylabel("accuracy in bin")
        ax.set_title("Reliability, pooled over annotation tasks\n(10 bins; bins with >= 10 cells)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(plot_dir / "reliability.png", dpi=90)
        plt.close(fig)
        out["reliability"] = "reliability.png"

    c = ok_rows(df)
    c = c[c["ari"].notna() & ((c["kind"] == "clustering") | c["tool"].isin(TRANSFER_CLUSTERERS))]
    if not c.empty:
        tools = tool_order(c)
        tasks = list(dict.fromkeys(c["task"]))
        piv = c.pivot_table(index="task", columns="tool", values="ari").reindex(index=tasks, columns=tools)
        fig, ax = plt.subplots(figsize=(max(7, 0.8 * len(tasks) + 4), 4.2))
        _grouped_bars(ax, piv, tools, cmap, rotation=35, fontsize=7)
        ax.set_ylabel("ARI")
        ax.set_title("Clustering ARI (transfer-task queries and clustering sets)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(plot_dir / "clustering_ari.png", dpi=90)
        plt.close(fig)
        out["ari"] = "clustering_ari.png"
    return out


# ---------------------------------------------------------------- page
def r_overhead_section() -> list:
    f = ROOT / "benchmarks" / "results_r_overhead.md"
    if not f.exists():
        return ["R-call overhead: `benchmarks/results_r_overhead.md` not found (run `benchmarks/bench_r_overhead.py`)."]
    r = subprocess.run(["git", "log", "-1", "--format=%cs %h", "--", str(f)], cwd=ROOT, capture_output=True, text=True)
    when = r.stdout.strip() or "uncommitted"
    text = f.read_text().splitlines()
    lines = [
        f"Not re-run by this command: cited from `benchmarks/results_r_overhead.md` (commit {when}; "
        "`benchmarks/bench_r_overhead.py`, scNym 2 epochs, 10,000-cell simulated query, 5,000-cell reference; "
        "the machine's load is stated on that page). The R call end to end against the Python call, and the "
        "bridge alone (R object -> Python -> result written back, no model):",
        "",
    ]

    def table_after(prefix):
        i = next((k for k, ln in enumerate(text) if ln.startswith(prefix)), None)
        if i is None:
            return ["(table not found in the file)"]
        tbl = []
        for ln in text[i + 1 :]:
            if ln.startswith("|"):
                tbl.append(ln)
            elif tbl:
                break
        return tbl or ["(table not found in the file)"]

    lines += table_after("scNym, ") + [""] + table_after("The bridge alone")
    return lines


def gpu_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The finished rows of a run on a GPU (the harness labels them with the device name)."""
    return df[(df["status"] == "ok") & (df["device"].fillna("CPU") != "CPU") & (df["device"].fillna("") != "")]


def title_section(task_set: str, quick) -> list:
    L = ["# pybridge benchmark: pybridge vs peer tools" + ("" if task_set == "dev" else f" ({task_set} tasks)"), ""]
    if task_set == "validation":
        L += [
            "**Validation tasks** (`--task-set validation`): six reference -> query pairs from the same files as the "
            "dev tasks (the reverse direction or another plate) on which no pybridge default or option was chosen. "
            "They check that what wins on the dev tasks ([RESULTS.md](RESULTS.md)) is not fitted to them.",
            "",
        ]
    if quick:
        L += [
            "**Quick smoke run** (`--quick`: one small task, one clustering set, a few epochs): the numbers only show "
            "that every tool runs end to end; they are not results.",
            "",
        ]
    return L


def run_section(df: pd.DataFrame, run_info: dict) -> list:
    """The bullet list on when, where and how the run ran: date, command, machine, load, versions, data, GPU."""
    mach = machine()
    ver = versions()
    loads = [v[0] for v in (run_info.get("load_start"), run_info.get("load_end")) if v]
    L = [
        f"- Date: {run_info.get('started', time.strftime('%Y-%m-%d'))}; "
        + (f"whole run {fmt(run_info['wall_min'], 1)} min; " if run_info.get("wall_min") is not None else "")
        + f"command `python -m benchmarks {run_info.get('argv', '')}`",
        *(
            [
                f"- This page merges {len(run_info['commands'])} invocations into one `--out` folder "
                f"({run_info.get('merge_reason', _MERGE_REASON)}), "
                "then `python -m benchmarks report`: " + "; ".join(f"`{c}`" for c in run_info["commands"])
            ]
            if run_info.get("commands")
            else []
        ),
        f"- Machine: {mach['cpu']}, {mach['cores']} cores, {fmt(mach['ram_gb'], 1)} GB RAM, {mach['os']}. "
        f"Load average at start {fmt(run_info.get('load_start', [np.nan])[0], 1)}, at end "
        f"{fmt(run_info.get('load_end', [np.nan])[0], 1)}"
        + (
            ": **the cores were shared with other jobs, so wall times are inflated and noisy**; accuracies are "
            "unaffected."
            if was_loaded(loads, mach["cores"])
            else " (about what the run's own calls produce)."
        ),
        f"- Each tool call: its own process, {run_info.get('threads', '?')} threads (BLAS / OpenMP / torch), seed "
        f"{run_info.get('seed', 0)}, timeout {fmt(run_info.get('timeout'), 0)} s"
        + (
            "; Python tools are forked from a process that has already imported the tool's packages (R tools are "
            "exec'd from a small launcher)."
            if run_info.get("fork")
            else "; a fresh interpreter or R session per call."
        ),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()),
        f"- Data: `{run_info.get('data', '../shared/data')}` (see its README.md for sources).",
        *([f"- Note: {run_info['note']}"] if run_info.get("note") else []),
    ]
    gpu = gpu_rows(df)
    if gpu.empty:
        L.append(
            "- GPU: **no CUDA GPU was available on this machine, so there is no GPU column**; the harness adds "
            "one automatically (pybridge methods run a second time with `device='cuda'`) when "
            "`torch.cuda.is_available()`."
        )
    else:
        L.append(f"- GPU: {gpu['device'].iloc[0]} (pybridge methods; the 'GPU s' columns).")
    return L


def how_it_was_run_section(run_info: dict) -> list:
    L = [
        "",
        "## How it was run",
        "",
        "- Every tool gets the same matrices: per task the reference and query are cut to their shared genes once "
        "(reference order), counts as stored (panc8's non-integer values unrounded; each tool normalises them its "
        "own way). Query labels are never passed to a tool. Types absent from the reference (the B cells of Zheng) "
        "are excluded from accuracy / F1 and scored as 'unseen'.",
        "- pybridge: `pybridge.api.compute_<method>` with defaults (early stopping on), except scNym with "
        "`reject=True` (in its default discovery mode: rejection by distance to the reference in the embedding; "
        "training unchanged) so that it has a rejection rule, and once more as `discovery=False, "
        "n_top_genes=2000` (the paper's main configuration, with per-class confidence thresholds, trained on the "
        "genes among the 2000 most dispersed of the reference or of the query; the panc8 files hold 2000 genes, "
        "so there it is that configuration on every gene); "
        "NMF transfer and CICL are given the true K. ItClust is scored twice: as an annotator (the cluster's mapped "
        "source type; flagged clusters = rejected; confidence = the cell's soft assignment) and as a transfer "
        "clustering (ARI/NMI of its clusters).",
        "- Peers: logistic regression on log1p(CPM) (no rejection); Seurat v4 `FindTransferAnchors` + `TransferData` "
        "(reference PCA, 30 dims; confidence = prediction.score.max; no rejection); SingleR (classic markers on "
        "log1p(1e4-normalised) data; rejection = its pruned labels; its scores are correlations, so no ECE; the "
        "unseen-type AUROC uses the top-minus-median score); CellTypist trained on the reference (no hub model; "
        "rejection = no class probability >= 0.5, CellTypist's 'prob match' rule); scANVI (scVI 50 + scANVI 20 "
        "epochs, 2000 reference HVGs, capped for the CPU budget; no rejection).",
        "- Clustering peers use scanpy (normalize 1e4, log1p, 2000 HVGs, scale, 50 PCs): KMeans with the true K, "
        "and Leiden on the 15-NN graph with the **resolution bisected until it gives the true K** (reached K and "
        "resolution in the CSV notes) - an advantage a user without labels does not have.",
        "- Metrics: accuracy and macro-F1 of the label before rejection on shared types; `acc kept` = accuracy on "
        "the shared-type cells not rejected; `rej` = rejected fraction of shared-type cells; `rej unseen` = rejected "
        "fraction of unseen-type cells; `AUROC unseen` = how well the tool's confidence separates unseen from seen "
        "cells (threshold-free, so comparable for tools without rejection); ECE with 10 equal-width bins; ARI and "
        "NMI (arithmetic) against the truth. `s` = the tool call alone; `wall` = the whole process ("
        + (
            "reading and writing files; for R tools also R start-up and package loading; Python tools' imports "
            "happen once per run, before the fork"
            if run_info.get("fork")
            else "start-up, imports, reading files; R start-up and Seurat loading included"
        )
        + "); `MB` = peak RSS of the process (`ru_maxrss`"
        + (
            ", which counts the pages inherited at the fork, i.e. the tool's imported packages"
            if run_info.get("fork")
            else ", which starts at the harness's own RSS at the fork before `exec`, so small tools show at least "
            "that floor"
        )
        + ").",
        "",
    ]
    return L


def _wlt(w: pd.DataFrame) -> pd.Series:
    """``"wins / losses / ties"`` per row of a :func:`wins` table."""
    return w["wins"].astype(str) + " / " + w["losses"].astype(str) + " / " + w["ties"].astype(str)


def annotation_section(df: pd.DataFrame) -> list:
    """Headline of the annotation tasks: means, the means over common tasks, wins and losses, the unseen type."""
    a = annotation_frame(df)
    if a.empty:
        return []
    return (
        ["## Headline: annotation (mean over reference -> query tasks)", ""]
        + _annotation_means(a)
        + _annotation_wins(a)
        + _unseen_type(a)
    )


def _annotation_means(a: pd.DataFrame) -> list:
    cols = ["acc", "macro_f1", "acc_kept", "rej_seen", "ece", "seconds", "wall_s", "peak_rss_mb"]
    show = (
        ["tool_label", "tasks", "acc", "macro_f1", "acc_kept", "rej_seen", "ece", "seconds", "wall_s", "peak_rss_mb"],
        ["tool", "tasks", "accuracy", "macro-F1", "acc kept", "rej", "ECE", "s", "wall s", "peak MB"],
    )
    nd = {"seconds": 1, "wall_s": 1, "peak_rss_mb": 0}
    m = means(a, cols)
    L = ["Each tool's mean over the tasks it finished (the `tasks` column):", "", md_table(m, *show, nd=nd), ""]
    per_tool = a.groupby("tool")["task"].apply(set)
    common = set.intersection(*per_tool.tolist()) if len(per_tool) else set()
    if common and any(len(v) > len(common) for v in per_tool):
        mc = means(a[a["task"].isin(common)], cols)
        L += [
            f"The same, over only the {len(common)} tasks every tool above finished "
            f"({', '.join(t for t in dict.fromkeys(a['task']) if t in common)}):",
            "",
            md_table(mc, *show, nd=nd),
            "",
        ]
    return L


def _annotation_wins(a: pd.DataFrame) -> list:
    ours = [t for t in tool_order(a) if t.startswith("pybridge")]
    peers = [t for t in tool_order(a) if not t.startswith("pybridge")]
    w = wins(a, "acc", ours, peers)
    if w.empty:
        return []
    wf = wins(a, "macro_f1", ours, peers)
    w["wlt"] = _wlt(w)
    w["f1_diff"] = wf["mean_diff"].to_numpy()
    w["f1_wlt"] = _wlt(wf).to_numpy()
    L = ["In short (each pybridge method against its strongest peer on the tasks both finished):", ""]
    for meth, g in w.groupby("pybridge", sort=False):
        b = g.loc[g["mean_diff"].idxmin()]
        L.append(
            f"- {meth}: {'+' if b['mean_diff'] >= 0 else ''}{b['mean_diff']:.3f} mean accuracy vs "
            f"{b['peer']} over {b['tasks']} tasks (won {b['wins']}, lost {b['losses']}, tied {b['ties']}; "
            f"macro-F1 {'+' if b['f1_diff'] >= 0 else ''}{b['f1_diff']:.3f}); against all peers it wins "
            f"{int(g['wins'].sum())} and loses {int(g['losses'].sum())} task comparisons."
        )
    L.append("")
    L += [
        "### Where pybridge wins and loses (pybridge minus peer over the tasks both finished; "
        "W / L / T = tasks won / lost / tied within 0.005)",
        "",
        md_table(
            w,
            ["pybridge", "peer", "tasks", "mean_diff", "wlt", "max_gain", "max_loss", "f1_diff", "f1_wlt"],
            [
                "pybridge",
                "peer",
                "tasks",
                "mean acc diff",
                "acc W / L / T",
                "best task",
                "worst task",
                "mean F1 diff",
                "F1 W / L / T",
            ],
        ),
        "",
    ]
    return L


def _unseen_type(a: pd.DataFrame) -> list:
    u = a[a["rej_unseen"].notna()]
    if u.empty:
        return []
    return [
        "### Unseen cell type (Zheng: B cells absent from the reference)",
        "",
        md_table(
            u.assign(tool_label=u["tool"].map(label_of)),
            ["tool_label", "acc", "rej_seen", "rej_unseen", "auroc_unseen"],
            ["tool", "accuracy (shared)", "rejected shared", "rejected B cells", "AUROC unseen vs seen"],
        ),
        "",
    ]


def clustering_section(df: pd.DataFrame) -> list:
    """Headlines of the clustering sets and of the transfer clusterings (queries of the transfer tasks)."""
    c_sets = ok_rows(df)
    c_sets = c_sets[c_sets["kind"] == "clustering"]
    c_tr = ok_rows(df)
    c_tr = c_tr[(c_tr["kind"] == "transfer") & c_tr["tool"].isin(TRANSFER_CLUSTERERS)]
    L = []
    for title, d in (
        ("clustering sets (true K given)", c_sets),
        ("transfer clustering (queries of the reference -> query tasks)", c_tr),
    ):
        if d.empty:
            continue
        L += [f"## Headline: {title}", ""]
        m = means(d, ["ari", "nmi", "k_found", "seconds", "wall_s", "peak_rss_mb"])
        L += [
            md_table(
                m,
                ["tool_label", "tasks", "ari", "nmi", "k_found", "seconds", "wall_s", "peak_rss_mb"],
                ["tool", "sets", "ARI", "NMI", "mean K found", "s", "wall s", "peak MB"],
                nd={"seconds": 1, "wall_s": 1, "peak_rss_mb": 0, "k_found": 1},
            ),
            "",
        ]
        ours = [t for t in tool_order(d) if t.startswith("pybridge")]
        w = wins(d, "ari", ours, [t for t in tool_order(d) if not t.startswith("pybridge")])
        if not w.empty:
            w["wlt"] = _wlt(w)
            L += [
                md_table(
                    w,
                    ["pybridge", "peer", "tasks", "mean_diff", "wlt", "max_gain", "max_loss"],
                    ["pybridge", "peer", "sets", "mean ARI diff", "ARI W / L / T", "best", "worst"],
                ),
                "",
            ]
    return L


def plots_section(figs: dict, plot_sub: str) -> list:
    if not figs:
        return []
    L = ["## Plots", ""]
    for key, title in (
        ("accuracy", "Accuracy per task"),
        ("time", "Time vs accuracy"),
        ("reliability", "Reliability diagram"),
        ("ari", "Clustering ARI"),
    ):
        if key in figs:
            L += [f"![{title}]({plot_sub}/{figs[key]})", ""]
    return L


def per_task_section(df: pd.DataFrame) -> list:
    L = ["## Per-task results", ""]
    gpu = not gpu_rows(df).empty
    for task in dict.fromkeys(df["task"]):
        L += _task_table(df, task, gpu)
    return L


def _task_table(df: pd.DataFrame, task: str, gpu: bool) -> list:
    """One task's heading, size line and table of every tool's CPU row (the GPU time as a column)."""
    d = df[(df["task"] == task) & (df["device"].fillna("CPU").isin(["CPU", ""]))].copy()
    if d.empty:
        return []
    kind = d["kind"].iloc[0]
    first = d[d["status"] == "ok"].head(1)
    size = ""
    if not first.empty:
        f0 = first.iloc[0]
        size = (
            f"reference {int(f0['n_ref'])} cells, query {int(f0['n_query'])} cells, {int(f0['n_genes'])} "
            f"shared genes, {int(f0['true_k'])} query types"
            if kind == "transfer"
            else f"{int(f0['n_query'])} cells, {int(f0['n_genes'])} genes, {int(f0['true_k'])} types"
        )
    L = [f"### {task}", "", size, ""]
    d["tool_label"] = d["tool"].map(label_of)
    d["status_note"] = d.apply(
        lambda r: (
            ""
            if r["status"] == "ok"
            else (
                r["status"]
                + (
                    f": {r['error']}"
                    if r["status"] == "error" and isinstance(r.get("error"), str) and r.get("error")
                    else ""
                )
            )
        ),
        axis=1,
    )
    if gpu:
        g = df[(df["task"] == task) & ~df["device"].fillna("CPU").isin(["CPU", ""]) & (df["status"] == "ok")]
        d["gpu_s"] = d["tool"].map(dict(zip(g["tool"], g["seconds"])))
    extra = (["gpu_s"], ["GPU s"]) if gpu else ([], [])
    if kind == "transfer":
        cols = (
            [
                "tool_label",
                "acc",
                "macro_f1",
                "acc_kept",
                "rej_seen",
                "rej_unseen",
                "auroc_unseen",
                "ece",
                "ari",
                "seconds",
            ]
            + extra[0]
            + ["wall_s", "peak_rss_mb", "status_note"]
        )
        names = (
            ["tool", "acc", "F1", "acc kept", "rej", "rej unseen", "AUROC unseen", "ECE", "ARI", "s"]
            + extra[1]
            + ["wall s", "MB", "note"]
        )
        if d["rej_unseen"].isna().all():
            cols = [c for c in cols if c not in ("rej_unseen", "auroc_unseen")]
            names = [n for n in names if n not in ("rej unseen", "AUROC unseen")]
    else:
        cols = ["tool_label", "ari", "nmi", "k_found", "seconds"] + extra[0] + ["wall_s", "peak_rss_mb", "status_note"]
        names = ["tool", "ARI", "NMI", "K", "s"] + extra[1] + ["wall s", "MB", "note"]
    return L + [
        md_table(d, cols, names, nd={"seconds": 1, "wall_s": 1, "peak_rss_mb": 0, "gpu_s": 1, "k_found": 0}),
        "",
    ]


def failures_section(df: pd.DataFrame, task_set: str, quick) -> list:
    """Calls that did not finish, and (a full run) the (tool, task) pairs of the task set that were never run."""
    from .tasks import TASK_SETS

    bad = df[df["status"] != "ok"]
    L = ["## Not run or failed", ""]
    gone = []
    if not quick:
        transfer_tasks, clustering_sets = TASK_SETS[task_set]
        have = set(zip(df["task"], df["tool"]))
        for t in tool_order(df):
            todo = [n for n in transfer_tasks if tool_applies(TOOLS[t], "transfer")] + [
                n for n in clustering_sets if tool_applies(TOOLS[t], "clustering")
            ]
            miss = [n for n in todo if (n, t) not in have]
            if miss:
                gone.append(
                    f"- {label_of(t)}: not run on {', '.join(miss)} (the run was stopped for time before "
                    "these calls; `python -m benchmarks --resume` runs only the missing ones)"
                )
        L += gone
    if bad.empty and not gone:
        L += ["Every (tool, task) call finished.", ""]
    else:
        for _, r in bad.iterrows():
            err = r.get("error") if isinstance(r.get("error"), str) and r["status"] == "error" else ""
            L.append(f"- {r['tool']} on {r['task']}: {r['status']}" + (f" ({err})" if err else ""))
        L.append("")
    return L


def r_call_section(task_set: str) -> list:
    if task_set != "dev":
        return []
    return ["## R-call overhead (pybridge from R)", ""] + r_overhead_section() + [""]


def validation_section(md: Path, task_set: str, quick) -> list:
    """A link to the validation page (on the dev page, when that page exists)."""
    if not ((md.parent / "VALIDATION.md").exists() and not quick and task_set == "dev"):
        return []
    return [
        "## Validation tasks",
        "",
        "The same tools on six held-out reference -> query pairs on which no pybridge setting was chosen: "
        "[VALIDATION.md](VALIDATION.md) (`python -m benchmarks --task-set validation`).",
        "",
    ]


def scale_section(md: Path, task_set: str, quick) -> list:
    """The summary of SCALE.md next to the page (on the dev page, when SCALE.md exists)."""
    scale_md = md.parent / "SCALE.md"
    if not (scale_md.exists() and not quick and task_set == "dev"):
        return []
    L = [
        "## Scale (simulated data)",
        "",
        "See [SCALE.md](SCALE.md) (made by `python -m benchmarks scale`); its summary:",
        "",
    ]
    keep = False
    for ln in scale_md.read_text().splitlines():
        if ln.startswith("## Summary"):
            keep = True
            continue
        if keep and ln.startswith("## "):
            break
        if keep:
            L.append(ln)
    L.append("")
    return L


def write_report(df: pd.DataFrame, out: Path, md: Path, run_info: dict | None = None) -> None:
    """Write the page ``md`` (and its plots next to it) for the results ``df`` of the run in ``out``."""
    run_info = run_info or {}
    md = Path(md)
    task_set = run_info.get("task_set", "dev")
    quick = run_info.get("quick")
    rel_path = out / "reliability.csv"
    rel = pd.read_csv(rel_path) if rel_path.exists() else None
    plot_sub = "plots" if task_set == "dev" else f"plots_{task_set}"  # a validation page keeps the dev page's plots
    figs = plots(df, rel, md.parent / plot_sub)
    for c in METRIC_COLUMNS:
        if c not in df:
            df[c] = np.nan
    L = (
        title_section(task_set, quick)
        + run_section(df, run_info)
        + how_it_was_run_section(run_info)
        + annotation_section(df)
        + clustering_section(df)
        + plots_section(figs, plot_sub)
        + per_task_section(df)
        + failures_section(df, task_set, quick)
        + r_call_section(task_set)
        + validation_section(md, task_set, quick)
        + scale_section(md, task_set, quick)
    )
    md.write_text("\n".join(L).rstrip() + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks report")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "full")
    p.add_argument("--results-md", type=Path, default=None)
    p.add_argument("--info", type=Path, default=None, help="run_info JSON (default <out>/run_info.json)")
    a = p.parse_args(argv)
    if (a.out / "runs").is_dir():  # every finished call in <out>/runs, also from several (partial) invocations
        from .harness import collect

        df = collect(a.out, [], [], merge=True)
    else:
        df = pd.read_csv(a.out / "results.csv")
    info_path = a.info or (a.out / "run_info.json")
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    write_report(df, a.out, a.results_md or (a.out / "RESULTS.md"), info)
    return 0
