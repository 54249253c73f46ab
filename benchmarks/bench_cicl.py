"""CICL clustering benchmark on the pybridge dev clustering sets.

For each dataset: CICL with the true number of types and with the estimated K,
next to two baselines on a standard scanpy pipeline (normalize_total 1e4,
log1p, 2000 Seurat HVGs, scale with max 10, 50 PCs): K-means with the true K
on the PCs, and Leiden (15 neighbours, resolution 1) on the PCA kNN graph.
Reports ARI, NMI (sklearn, arithmetic normalisation as in the CICL code),
the number of clusters and wall time, and prints a Markdown table (also
written to ``--out``). Labels are used only to score finished runs.

The baselines need scanpy + leidenalg (optional; without scanpy the
PCA+KMeans baseline runs on pybridge's own preprocessing and Leiden is skipped).

    python -m benchmarks.bench_cicl --threads 1 --out benchmarks/results_cicl.md
"""

from __future__ import annotations

import argparse
import csv
import platform
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import pybridge
from pybridge.models.cicl import CICL

from .tasks import CLUSTERING_SETS

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT.parent / "shared" / "data"
DATASETS = CLUSTERING_SETS  # the suite's clustering sets (benchmarks/tasks.py)
DATASETS_BY_SIZE = [
    "sc3_yan",
    "simlr_pollen",
    "cellbench_sc_celseq2_5cl_p2",
    "baron_mouse2",
    "pbmc3k_counts_seurat_labels",
    "dcc_mouse_bladder_cell_top2000",
    "dcc_10X_PBMC_top2000",
]
#: CICL paper, Table 3 (ARI, NMI), where the dataset overlaps. The paper's "pollen" has 301 cells
#: (this SIMLR copy: 249) and its "Bladder" is a 2-type Tabula Muris set, not the 16-type dcc bladder.
PAPER = {"simlr_pollen": (0.9117, 0.9323), "sc3_yan": (0.7989, 0.8307)}


def score(y, pred) -> tuple[float, float]:
    return adjusted_rand_score(y, pred), normalized_mutual_info_score(y, pred)


def baselines(a: ad.AnnData, k: int, seed: int) -> dict:
    """PCA+KMeans (true K) and PCA+Leiden on the standard scanpy pipeline."""
    out = {}
    try:
        import scanpy as sc
    except ImportError:
        sc = None
    t0 = time.perf_counter()
    if sc is not None:
        b = ad.AnnData(a.X.copy(), obs=a.obs[[]].copy(), var=a.var[[]].copy())
        sc.pp.filter_genes(b, min_cells=1)
        sc.pp.normalize_total(b, target_sum=1e4)
        sc.pp.log1p(b)
        sc.pp.highly_variable_genes(b, flavor="seurat", n_top_genes=min(2000, b.n_vars))
        b = b[:, b.var["highly_variable"]].copy()
        sc.pp.scale(b, max_value=10)
        sc.tl.pca(b, n_comps=min(50, b.n_obs - 1, b.n_vars - 1), random_state=seed)
        pcs = b.obsm["X_pca"]
    else:
        from pybridge.data import get_counts
        from pybridge.models.cicl._preprocess import _fit_preprocessing, _pca_scores, _Scaler

        prep, Xh = _fit_preprocessing(get_counts(a), a.var_names, 2000)
        pcs = _pca_scores(Xh, _Scaler(prep, "cpu", 10.0), 50)
    t_pca = time.perf_counter() - t0
    from sklearn.cluster import KMeans

    t0 = time.perf_counter()
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(pcs)
    out["pca_kmeans"] = (km, k, t_pca + time.perf_counter() - t0)
    if sc is not None:
        try:
            t0 = time.perf_counter()
            sc.pp.neighbors(b, n_neighbors=15, random_state=seed)
            sc.tl.leiden(b, resolution=1.0, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
            lab = b.obs["leiden"].astype(int).to_numpy()
            out["pca_leiden"] = (lab, len(np.unique(lab)), t_pca + time.perf_counter() - t0)
        except ImportError as err:  # leidenalg / igraph missing
            print(f"  leiden skipped: {err}", file=sys.stderr)
    return out


def run_cicl(a, k, seed, device, overrides):
    t0 = time.perf_counter()
    model = CICL(n_clusters=k, seed=seed, device=device, verbose=False, **overrides).fit(a)
    return model.result_.clusters, model.n_clusters_, time.perf_counter() - t0, model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_cicl", description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="CICLConfig override")
    p.add_argument("--no-estimated", action="store_true", help="skip the estimated-K runs")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--out", default=None, help="write the Markdown table here")
    p.add_argument("--csv", default=None)
    p.add_argument("--label", default="", help="suffix for the CICL rows' method name, e.g. the variant")
    p.add_argument(
        "--summarize",
        nargs="+",
        metavar="CSV",
        help="only tabulate --csv files of earlier runs "
        "(mean ARI over seeds per dataset and method, and the mean over datasets)",
    )
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = eval(value, {}, {})  # numbers, booleans, None
        except Exception:
            overrides[key] = value
    rows = []
    if not args.no_baselines:  # compile scanpy's numba kernels once, outside the timings
        warm = (
            ad.read_h5ad(DATA / "cellbench_sc_celseq2_5cl_p2.h5ad")
            if (DATA / "cellbench_sc_celseq2_5cl_p2.h5ad").exists()
            else None
        )
        if warm is not None:
            baselines(warm[:120].copy(), 3, args.seed)
    for name in args.datasets.split(","):
        path = DATA / f"{name}.h5ad"
        if not path.exists():
            print(f"skipping {name}: {path} not found", file=sys.stderr)
            continue
        a = ad.read_h5ad(path)
        y = a.obs["cell_type"].astype(str).to_numpy()
        k = len(np.unique(y))
        results = {}
        if not args.no_baselines:
            results.update(baselines(a, k, args.seed))
        lab, kk, t, model = run_cicl(a, k, args.seed, args.device, overrides)
        results["cicl_trueK"] = (lab, kk, t)
        if not args.no_estimated:
            # the K estimate is made before training and is deterministic: reuse the true-K run when it agrees
            est = CICL(seed=args.seed, device=args.device, verbose=False, **{**overrides, "n_epochs": 1})
            from pybridge.data import get_counts
            from pybridge.models.cicl import estimate_n_clusters
            from pybridge.models.cicl._preprocess import _fit_preprocessing, _pca_scores, _Scaler

            cfg = est.config
            prep, Xh = _fit_preprocessing(get_counts(a), a.var_names.astype(str), cfg.n_top_genes)
            t0 = time.perf_counter()
            k_hat, _ = estimate_n_clusters(
                _pca_scores(Xh, _Scaler(prep, "cpu", None), cfg.n_pcs),
                method=cfg.k_estimator,
                k_min=cfg.k_min,
                k_max=cfg.k_max,
                seed=args.seed,
                n_init=cfg.kmeans_n_init,
                n_neighbors=cfg.k_neighbors,
            )
            t_est = time.perf_counter() - t0
            if k_hat == k:
                results["cicl_estK"] = (lab, k, t + t_est)
            else:
                lab2, k2, t2, _ = run_cicl(a, None, args.seed, args.device, overrides)
                assert k2 == k_hat, (k2, k_hat)
                results["cicl_estK"] = (lab2, k2, t2)
        if args.label:
            results = {(f"{m}_{args.label}" if m.startswith("cicl") else m): v for m, v in results.items()}
        for method, (pred, n_clu, secs) in results.items():
            ari, nmi = score(y, pred)
            rows.append(
                dict(
                    dataset=name,
                    cells=a.n_obs,
                    types=k,
                    method=method,
                    k=n_clu,
                    ari=ari,
                    nmi=nmi,
                    seconds=secs,
                    seed=args.seed,
                )
            )
            print(f"{name:32s} {method:12s} K={n_clu:3d} ARI={ari:.4f} NMI={nmi:.4f} {secs:8.1f}s", flush=True)
        if name in PAPER:
            rows.append(
                dict(
                    dataset=name,
                    cells=a.n_obs,
                    types=k,
                    method="paper_CICL",
                    k=k,
                    ari=PAPER[name][0],
                    nmi=PAPER[name][1],
                    seconds=float("nan"),
                    seed="",
                )
            )
        write(rows, args, overrides)  # after every dataset, so a long run leaves partial results
    print(markdown(rows, args, overrides))
    return 0


def summarize(paths) -> str:
    """Markdown: ARI per dataset and method (mean over seeds, with the per-seed values), then means over datasets.

    A file without a ``seed`` column takes the seed from an ``_s<seed>`` in its name.
    """
    import re

    import pandas as pd

    frames = []
    for path in paths:
        df = pd.read_csv(path)
        if "seed" not in df:
            m = re.search(r"_s(\d+)", Path(path).stem)
            df["seed"] = int(m.group(1)) if m else 0
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df = df[df["method"] != "paper_CICL"].drop_duplicates(["dataset", "method", "seed"], keep="last")
    datasets = [d for d in DATASETS_BY_SIZE if d in set(df["dataset"])]
    methods = list(dict.fromkeys(df["method"]))
    lines = ["| dataset | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for d in datasets:
        cells = []
        for m in methods:
            v = df[(df["dataset"] == d) & (df["method"] == m)].sort_values("seed")["ari"].to_numpy()
            cells.append(
                ""
                if not len(v)
                else f"{v.mean():.3f}" + (f" ({', '.join(f'{x:.2f}' for x in v)})" if len(v) > 1 else "")
            )
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | mean ARI (seed 0, all datasets it ran on) | datasets | mean ARI over seeds, "
        "per dataset then averaged | seeds per dataset |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        sub = df[df["method"] == m]
        s0 = sub[sub["seed"] == 0]
        per = sub.groupby("dataset")["ari"].mean()
        counts = sub.groupby("dataset")["seed"].nunique()
        lines.append(
            f"| {m} | {s0['ari'].mean():.4f} | {s0['dataset'].nunique()} | {per.mean():.4f} | "
            f"{counts.min()}-{counts.max()} |"
        )
    return "\n".join(lines) + "\n"


def write(rows, args, overrides) -> None:
    if args.out and rows:
        Path(args.out).write_text(markdown(rows, args, overrides))
    if args.csv and rows:
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def markdown(rows, args, overrides) -> str:
    cfg = CICL(verbose=False, device="cpu", **overrides).config
    lines = [
        "| dataset | cells | types | method | K | ARI | NMI | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        secs = "" if np.isnan(r["seconds"]) else f"{r['seconds']:.1f}"
        lines.append(
            f"| {r['dataset']} | {r['cells']} | {r['types']} | {r['method']} | {r['k']} | {r['ari']:.4f} | "
            f"{r['nmi']:.4f} | {secs} |"
        )
    means = {}
    for r in rows:
        if r["method"] != "paper_CICL":
            means.setdefault(r["method"], []).append((r["ari"], r["nmi"]))
    lines += ["", "| method | mean ARI | mean NMI | datasets |", "|---|---|---|---|"]
    for m, v in means.items():
        v = np.asarray(v)
        lines.append(f"| {m} | {v[:, 0].mean():.4f} | {v[:, 1].mean():.4f} | {len(v)} |")
    header = (
        f"pybridge {pybridge.__version__}, torch {torch.__version__}, device {args.device}, "
        f"{args.threads} thread(s), {platform.processor() or platform.machine()}, seed {args.seed}. "
        f"CICL config: n_epochs={cfg.n_epochs}, batch_size={cfg.batch_size}, lr={cfg.lr}, attention={cfg.attention}, "
        f"norm={cfg.norm}, "
        f"pseudo_labels={cfg.pseudo_labels}, losses={cfg.instance_loss}+{cfg.lam}*{cfg.cluster_loss}, "
        f"augmentation={cfg.augmentation}, k_estimator={cfg.k_estimator}.\n\n"
    )
    return header + "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
