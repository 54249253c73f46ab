"""Timing run on simulated data: seconds and peak memory per tool as the number of cells grows.

    python -m benchmarks scale [--sizes 10000,50000,200000] [--tools ...] [--timeout 1200] [--budget-min 40]
                               [--out benchmarks/out/scale] [--md benchmarks/SCALE.md]

For each size N a reference and a query of N cells each (2000 genes, sparse
counts) come from pybridge's hierarchical negative-binomial simulator
(``pybridge.datasets.simulate``, 2N cells, 8 leaf types, split at random into two
halves; background means Gamma(2, rate 2) instead of the default rate 0.1, which
makes ~46% of entries zero instead of ~2%). The data are generated in a separate
process and cached. Every tool then runs through the same per-call subprocess
harness as the main benchmark, with *fixed, small* epoch counts for the neural
methods (no early stopping), so the times are per-run costs of that many epochs,
not of a converged model:

  scNym 2 epochs; JIND 2 classifier epochs + 1 GAN epoch; ItClust 6 + 6 autoencoder
  epochs, 2 source epochs, 2 target updates; CICL 2 epochs; scANVI 2 scVI + 1 scANVI
  epochs; the others as in the main benchmark.

Rules: a tool that times out or runs out of memory at one size is not run at the
larger ones ("not run: failed at a smaller size"); NMF transfer (SC3's consensus
step keeps n x n cell-cell matrices: ~8 n^2 bytes each) is not run where that
estimate exceeds the memory limit; when the overall ``--budget-min`` is used up,
the remaining calls are recorded as "not run (time budget)".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import tasks as T
from .environment import machine, was_loaded
from .formatting import fmt
from .harness import call, env_for, gpu_name, run_one
from .tools import TOOLS, label_of

ROOT = Path(__file__).resolve().parents[1]
SCALE_OPTS = {
    "pybridge_scnym": {"n_epochs": 2, "min_epochs": 2, "reject": True},
    "pybridge_jind": {"n_epochs": 2, "gan_epochs": 1},
    "pybridge_itclust": {"layerwise_epochs": 6, "pretrain_epochs": 6, "source_epochs": 2, "maxiter": 2},
    "pybridge_cicl": {"n_epochs": 2},
    "scanvi": {"scvi_epochs": 2, "scanvi_epochs": 1},
}
EPOCHS = {"pybridge_scnym": 2, "pybridge_cicl": 2, "scanvi": 3}
DEFAULT_TOOLS = [
    "logreg",
    "pca_kmeans",
    "pca_leiden",
    "pybridge_scnym",
    "pybridge_jind",
    "pybridge_linear",
    "pybridge_itclust",
    "pybridge_cicl",
    "pybridge_nmf_transfer",
    "celltypist",
    "singler",
    "seurat",
    "scanvi",
]
N_GENES = 2000
GAMMA_RATE = 2.0


def generate(n: int, out: Path, seed: int = 0) -> None:
    """Simulate 2n cells, split into reference / query halves, write the prepared task (run in a subprocess)."""
    from pybridge.datasets import simulate

    t0 = time.perf_counter()
    a = simulate(2 * n, N_GENES, gamma_rate=GAMMA_RATE, seed=seed)
    t_sim = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    idx = rng.permutation(a.n_obs)
    r, q = a[np.sort(idx[:n])], a[np.sort(idx[n:])]
    out.mkdir(parents=True, exist_ok=True)
    import scipy.sparse as sp

    genes = a.var_names.astype(str)
    for side, b in (("ref", r), ("query", q)):
        X = sp.csr_matrix(b.X, dtype=np.float32)
        T.write_side(
            X,
            b.obs_names.astype(str),
            genes,
            out,
            side,
            labels=b.obs["cell_type"].astype(str).to_numpy() if side == "ref" else None,
        )
    yq = q.obs["cell_type"].astype(str).to_numpy()
    meta = dict(
        name=f"sim_{n}",
        kind="transfer",
        n_ref=int(r.n_obs),
        n_query=int(q.n_obs),
        n_genes=N_GENES,
        ref_classes=sorted(set(r.obs["cell_type"].astype(str))),
        n_types=int(len(set(yq))),
        simulate_s=t_sim,
        density=float(a.X.nnz / (a.n_obs * a.n_vars)),
    )
    T._finish(out, meta, yq)


def nmf_memory_gb(n: int) -> float:
    """Size of one n x n float64 matrix of SC3, which clusters at most ``svm_max_cells`` cells (its hybrid mode)."""
    from pybridge.models.nmf_transfer import NMFTransferConfig

    m = NMFTransferConfig().svm_max_cells
    n = n if m is None else min(n, m)
    return 8.0 * n * n / 2**30


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,50000,200000", help="cells per side (reference and query each)")
    p.add_argument("--tools", default=",".join(DEFAULT_TOOLS))
    p.add_argument("--timeout", type=float, default=1200, help="seconds per tool call (default 20 min)")
    p.add_argument("--mem-limit-gb", type=float, default=16)
    p.add_argument("--budget-min", type=float, default=None, help="stop starting calls after this many minutes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "scale")
    p.add_argument("--md", type=Path, default=None, help="Markdown page (default <out>/SCALE.md)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-gpu", action="store_true")
    p.add_argument("--report-only", action="store_true", help="rewrite the page from <out>/scale.csv")
    a = p.parse_args(argv)
    if a.report_only:
        # scale.csv (finished invocations) + scale_progress.csv (an invocation stopped early, which wins);
        # every (size, tool) asked for with --sizes / --tools and not found is listed as not run
        info = json.loads((a.out / "scale_info.json").read_text())
        df = pd.read_csv(a.out / "scale.csv")
        prog = a.out / "scale_progress.csv"
        if prog.exists():
            new = pd.read_csv(prog)
            done = set(zip(new["size"], new["tool"]))
            df = pd.concat(
                [df[[(s_, t_) not in done for s_, t_ in zip(df["size"], df["tool"])]], new], ignore_index=True
            )
        have = set(zip(df["size"], df["tool"]))

        def why(n, t):
            prev = df[(df["tool"] == t) & (df["size"] < n) & df["status"].astype(str).str.contains("timeout|memory")]
            if len(prev):
                return f"not run: {prev['status'].iloc[0]} at {int(prev['size'].iloc[0])} cells"
            return "not run (time: the run was stopped before this call)"

        extra = [
            {"size": int(n), "tool": t, "tool_label": TOOLS[t].display, "status": why(n, t)}
            for n in (int(x) for x in a.sizes.split(","))
            for t in a.tools.split(",")
            if (n, t) not in have
        ]
        df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True) if extra else df
        order = {t: i for i, t in enumerate(a.tools.split(","))}
        df = df.sort_values(
            by=["size", "tool"], key=lambda c: c.map(order).fillna(99) if c.name == "tool" else c, kind="stable"
        )
        md = a.md or (a.out / "SCALE.md")
        write_scale_md(df, md, info)
        print(f"[scale] wrote {md}")
        return 0
    a.quick = False
    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in a.sizes.split(",")]
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    bad = [t for t in tools if t not in TOOLS or TOOLS[t].clusters == "sets" and t != "pybridge_cicl"]
    if bad:
        raise SystemExit(f"unknown tools: {bad}")
    from .peers import availability

    gpu = None if a.no_gpu else gpu_name()
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rows = []
    failed = {}
    missing = {t: why for t in tools for ok, why in [availability(t)] if not ok}
    for n in sizes:
        task_dir = a.out / "prepared" / f"sim_{n}"
        gen = {}
        if (
            not (task_dir / "task.json").exists()
            and a.budget_min
            and (time.perf_counter() - t_start) / 60 > a.budget_min
        ):
            for t in tools:
                rows.append(
                    {
                        "size": n,
                        "tool": t,
                        "tool_label": TOOLS[t].display,
                        "status": f"not run (time budget of {a.budget_min:.0f} min used up)",
                    }
                )
            continue
        if not (task_dir / "task.json").exists():
            code = (
                "import sys; from pathlib import Path; from benchmarks.scale import generate; "
                f"generate({n}, Path(sys.argv[1]), {a.seed})"
            )
            (a.out / "logs").mkdir(exist_ok=True)
            gen = call(
                [sys.executable, "-c", code, str(task_dir)],
                env=env_for(a.threads),
                log=a.out / "logs" / f"generate_{n}.txt",
                timeout=a.timeout * 2,
                mem_limit_mb=a.mem_limit_gb * 1024,
            )
            if gen["status"] != "ok":
                for t in tools:
                    rows.append({"size": n, "tool": t, "status": f"not run (data generation {gen['status']})"})
                continue
        prep = T.load_prepared(task_dir)
        meta = json.loads((task_dir / "task.json").read_text())
        print(
            f"[scale] {n} cells per side ready (simulated in {meta.get('simulate_s', 0):.0f}s, "
            f"density {meta.get('density', 0):.2f})",
            flush=True,
        )
        for t in tools:
            tool = TOOLS[t]
            base = {"size": n, "tool": t, "tool_label": tool.display, "density": meta.get("density")}
            if t in missing:
                rows.append({**base, "status": missing[t]})
                continue
            if t in failed:
                rows.append({**base, "status": f"not run: {failed[t]} at {failed[t + '_n']} cells"})
                continue
            if t == "pybridge_nmf_transfer" and nmf_memory_gb(n) * 2 > a.mem_limit_gb:
                rows.append(
                    {
                        **base,
                        "status": f"not run: SC3 consensus needs n x n matrices "
                        f"(~{nmf_memory_gb(n):.0f} GB each) > memory limit",
                    }
                )
                continue
            if a.budget_min and (time.perf_counter() - t_start) / 60 > a.budget_min:
                rows.append({**base, "status": f"not run (time budget of {a.budget_min:.0f} min used up)"})
                continue
            extra = dict(SCALE_OPTS.get(t, {}))
            if t == "pybridge_cicl":
                tool = TOOLS["pybridge_cicl"]
                # CICL clusters the query alone: give it a clustering view of the same files
                prep_c = T.Prepared(
                    name=prep.name,
                    kind="clustering",
                    dir=prep.dir,
                    n_ref=0,
                    n_query=prep.n_query,
                    n_genes=prep.n_genes,
                    n_types=prep.n_types,
                    truth=prep.truth,
                    ref_classes=[],
                )
                use = prep_c
            else:
                use = prep
            devices = [("cpu", "CPU")] + ([("cuda", gpu)] if gpu and tool.group == "pybridge" else [])
            for dev, dev_name in devices:
                row, _ = run_one(
                    tool, use, a, device=dev, device_name=dev_name, extra_opts=extra, run_root=a.out / "runs"
                )
                r = {
                    **base,
                    **{
                        k: row.get(k)
                        for k in (
                            "status",
                            "seconds",
                            "wall_s",
                            "peak_rss_mb",
                            "rss_before_mb",
                            "acc",
                            "ari",
                            "device",
                            "error",
                            "notes",
                        )
                    },
                }
                if t in EPOCHS and isinstance(r.get("seconds"), float):
                    r["epochs"] = EPOCHS[t]
                rows.append(r)
                print(
                    f"[scale] {n:>7d} {t:22s} {dev:4s} {r['status']:10s} s={r.get('seconds')} "
                    f"MB={r.get('peak_rss_mb')} (elapsed {(time.perf_counter() - t_start) / 60:.1f} min)",
                    flush=True,
                )
                if dev == "cpu" and r["status"] != "ok" and not str(r["status"]).startswith("error"):
                    failed[t], failed[t + "_n"] = r["status"], n
                pd.DataFrame(rows).to_csv(a.out / "scale_progress.csv", index=False)
    df = pd.DataFrame(rows)
    if a.resume and (a.out / "scale.csv").exists():  # keep earlier invocations' rows for (size, tool) not run now
        old = pd.read_csv(a.out / "scale.csv")
        done = set(zip(df["size"], df["tool"]))
        old = old[[(s_, t_) not in done for s_, t_ in zip(old["size"], old["tool"])]]
        df = pd.concat([old, df], ignore_index=True).sort_values(["size"], kind="stable")
    df.to_csv(a.out / "scale.csv", index=False)
    md = a.md or (a.out / "SCALE.md")
    info = {
        "started": started,
        "minutes": (time.perf_counter() - t_start) / 60,
        "argv": " ".join(argv if argv is not None else sys.argv[2:]),
        "timeout": a.timeout,
        "mem": a.mem_limit_gb,
        "threads": a.threads,
        "load": os.getloadavg(),
    }
    (a.out / "scale_info.json").write_text(json.dumps(info))
    write_scale_md(df, md, info)
    print(f"[scale] wrote {a.out / 'scale.csv'} and {md}")
    return 0


def write_scale_md(df: pd.DataFrame, md: Path, info: dict) -> None:
    mach = machine()
    sizes = sorted(df["size"].unique())
    L = [
        "# pybridge scale benchmark (simulated data)",
        "",
        f"Made by `python -m benchmarks scale {info.get('argv', '')}` on {info['started']} "
        f"({fmt(info['minutes'], 1)} min). Machine: {mach['cpu']}, {mach['cores']} cores, {fmt(mach['ram_gb'], 1)} GB "
        f"RAM; {info['threads']} threads per call; per-call timeout {fmt(info['timeout'], 0)} s, memory limit "
        f"{fmt(info['mem'], 0)} GB; load average {fmt(info['load'][0], 1)} at the end"
        + (
            ". **The cores were shared with other jobs, so every time is inflated**; ratios between sizes are the "
            "more useful reading."
            if was_loaded([info["load"][0]], mach["cores"])
            else " (about what the run's own calls produce)."
        )
        + (
            " GPU rows are marked in the device column."
            if "device" in df and df["device"].astype(str).str.contains("cuda", case=False).any()
            else " No GPU was available (a GPU column is added automatically when CUDA is)."
        ),
        "",
        "Data: `pybridge.datasets.simulate` (hierarchical negative binomial, 8 types, 2000 genes, background "
        f"means Gamma(2, rate {GAMMA_RATE})), 2N cells split at random into a reference and a query of N cells each. "
        "Neural methods run a fixed, small number of epochs (see the module docstring of `benchmarks/scale.py`), so "
        "their times are the cost of those epochs plus preprocessing and prediction, not of a converged model.",
        *(["", f"Note: {info['note']}"] if info.get("note") else []),
        "",
        "## Summary",
        "",
    ]
    ok = df[df["status"] == "ok"]
    head = ["tool"] + [f"{s // 1000}k s" for s in sizes] + [f"{s // 1000}k MB" for s in sizes]
    growth = []
    for i in range(1, len(sizes)):
        growth.append(f"x{sizes[i] // sizes[i - 1]} cells: time x")
    head += growth
    L += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for t in dict.fromkeys(df["tool"]):
        d = df[df["tool"] == t].set_index("size")
        cells = [label_of(t)]
        secs, mems = [], []
        for s in sizes:
            if s in d.index and d.loc[s, "status"] == "ok":
                secs.append(float(d.loc[s, "seconds"]))
                mems.append(float(d.loc[s, "peak_rss_mb"]))
            else:
                secs.append(np.nan)
                mems.append(np.nan)

        def cell(v, s, nd):
            if np.isfinite(v):
                return fmt(v, nd)
            st = d.loc[s, "status"] if s in d.index else "not run"
            short = (
                "time"
                if st.startswith("not run (time")
                else "skipped"
                if st.startswith("not run:") and " at " in st
                else "timeout"
                if "timeout" in st
                else "OOM"
                if ("memory" in st or "n x n" in st)
                else "budget"
                if "budget" in st
                else "skipped"
                if ("smaller size" in st or " at " in st and st.startswith("not run:"))
                else "n/i"
                if "not installed" in st
                else "error"
                if st == "error"
                else "-"
            )
            return f"_{short}_"

        cells += [cell(v, s, 1) for v, s in zip(secs, sizes)] + [cell(v, s, 0) for v, s in zip(mems, sizes)]
        for i in range(1, len(sizes)):
            cells.append(fmt(secs[i] / secs[i - 1], 1) if np.isfinite(secs[i]) and np.isfinite(secs[i - 1]) else "")
        L.append("| " + " | ".join(cells) + " |")
    L += [
        "",
        "`s` = the tool call alone (seconds), `MB` = peak RSS of the process; _timeout_ / _OOM_ = killed at the "
        "limit, _skipped_ = failed at a smaller size, _time_ = not run: the time budget was used up or the run "
        "was stopped "
        "first, _n/i_ = not "
        "installed, _OOM_ for NMF transfer = not started because of its n x n consensus matrices. Time growth: the "
        "ratio of seconds between consecutive sizes (linear scaling = the ratio of cell counts).",
        "",
    ]
    L += [
        "## All calls",
        "",
        "| cells per side | tool | status | seconds | wall s | peak MB | accuracy | ARI | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in df.iterrows():
        note = r.get("error") if isinstance(r.get("error"), str) else ""
        if not note and isinstance(r.get("notes"), str):
            note = r["notes"]
        L.append(
            f"| {r['size']} | {label_of(r['tool'])} | {r['status']} | {fmt(r.get('seconds'), 1)} | "
            f"{fmt(r.get('wall_s'), 1)} | {fmt(r.get('peak_rss_mb'), 0)} | {fmt(r.get('acc'))} | "
            f"{fmt(r.get('ari'))} | {note[:120]} |"
        )
    L.append("")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        cmap = plt.get_cmap("tab20")
        for i, t in enumerate(dict.fromkeys(ok["tool"])):
            d = ok[ok["tool"] == t].sort_values("size")
            kw = dict(marker="o", color=cmap(i % 20), label=label_of(t), lw=2 if t.startswith("pybridge") else 1)
            axes[0].plot(d["size"], d["seconds"], **kw)
            axes[1].plot(d["size"], d["peak_rss_mb"] / 1024, **kw)
        for ax, yl in zip(axes, ("seconds (tool call)", "peak RSS (GB)")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("cells per side (reference = query)")
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=7)
        fig.suptitle("Scale on simulated data (shared 2-core CPU; fixed small epoch counts)")
        fig.tight_layout()
        plot_dir = md.parent / "plots"
        plot_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot_dir / "scale.png", dpi=90)
        plt.close(fig)
        L += ["![scale](plots/scale.png)", ""]
    except Exception as err:  # plots are optional
        L += [f"(plot not made: {err})", ""]
    md.write_text("\n".join(L))
