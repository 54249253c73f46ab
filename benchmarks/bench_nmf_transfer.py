"""NMF transfer clustering (Mieth et al. 2019): ARI of TransferCluster vs TargetCluster vs ConcatenateCluster.

Three parts (``--parts``):

* ``sim``: the paper's hierarchical negative-binomial simulation in its three
  settings (complete / incomplete / no overlap of the top-level clusters),
  a 1000-cell source and nested target subsamples of several sizes, a few
  seeds. The paper uses 10 000 genes and targets up to 800 cells
  (``--paper-scale``); the default uses 2000 genes and targets up to 200
  cells so that it runs on a CPU in reasonable time.
* ``real``: baron_mouse1 -> baron_mouse2 with the reference labels, and
  panc8_small leave-one-technology-out (the other four as the source).
* ``timing``: wall time of the pieces (source NMF, one SC3 pass, the whole
  theta grid) on simulated targets of growing size, on CPU and, when
  available, CUDA.

k is the true number of target types (the paper's oracle k);
ConcatenateCluster uses the number of types in source and target together and
is scored on the target cells only, as in the paper. Two TransferCluster
variants are reported: the paper's (``nmf_refine=True``, the default) and
``nmf_refine=False`` (W_src kept at the one-hot labels).

    python -m benchmarks.bench_nmf_transfer                   # all parts, prints tables
    python -m benchmarks.bench_nmf_transfer --parts real --write benchmarks/results_nmf_transfer.md
    python -m benchmarks.bench_nmf_transfer --quick           # a small smoke run
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from pybridge.models.nmf_transfer import NMFTransfer, simulate_transfer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = ("transfer", "transfer_fixedW", "target", "concatenate")
HEAD = {
    "transfer": "TransferCluster",
    "transfer_fixedW": "Transfer (nmf_refine=False)",
    "target": "TargetCluster",
    "concatenate": "ConcatenateCluster",
    "transfer_fixedW_capped": "Transfer (nmf_refine=False, theta <= 0.9)",
}
CAPPED_THETAS = tuple(round(0.1 * i, 1) for i in range(10))


def ari(a, b) -> float:
    return float(adjusted_rand_score(np.asarray(a, dtype=str), np.asarray(b, dtype=str)))


def run_all(source, target, seed, device, methods=METHODS, **cfg):
    """ARI of the requested methods on one (source, target) pair, with theta, source ARI and times."""
    y = target.obs["cell_type"].astype(str).to_numpy()
    k = len(set(y))
    k_union = len(set(y) | set(source.obs["cell_type"].astype(str)))
    out, models = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for refine in (True, False):
            wanted = ["transfer"] if refine else ["transfer_fixedW", "transfer_fixedW_capped"]
            if not any(m in methods for m in wanted) and not (refine is False and not models):
                continue
            t0 = time.perf_counter()
            models[refine] = NMFTransfer(seed=seed, device=device, verbose=False, nmf_refine=refine, **cfg).fit(source)
            fit_s = time.perf_counter() - t0
            for name in wanted:
                if name not in methods:
                    continue
                t0 = time.perf_counter()
                model = models[refine].replace(thetas=CAPPED_THETAS) if name.endswith("capped") else models[refine]
                res = model.predict(target, n_clusters=k)
                types = None if res.cell_types is None else float(np.mean(np.asarray(res.cell_types, dtype=str) == y))
                out[name] = dict(
                    ari=ari(y, res.clusters),
                    theta=res.params["theta"],
                    source_ari=model.fit_info_["source_ari"],
                    type_acc=types,
                    seconds=time.perf_counter() - t0 + fit_s,
                    fit_s=fit_s,
                )
                out["n_genes_used"] = res.params["n_genes_used"]
        base = next(iter(models.values()))  # target and concatenate use only the gene set and the source data
        if "target" in methods:
            t0 = time.perf_counter()
            tg = base.replace(mode="target").predict(target, n_clusters=k)
            out["target"] = dict(ari=ari(y, tg.clusters), seconds=time.perf_counter() - t0)
            out["n_genes_used"] = tg.params["n_genes_used"]
        if "concatenate" in methods:
            t0 = time.perf_counter()
            cc = base.replace(mode="concatenate").predict(target, n_clusters=k_union)
            out["concatenate"] = dict(ari=ari(y, cc.clusters), seconds=time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------- simulation
def bench_sim(args, device):
    rows = []
    for overlap in args.overlaps:
        for seed in args.seeds:
            src, trg = simulate_transfer(args.n_source, max(args.sizes), overlap, n_genes=args.n_genes, seed=seed)
            for n in args.sizes:
                t = trg[:n].copy()
                r = run_all(src, t, seed, device, args.methods, gene_filter=False)
                tm = [m for m in args.methods if m.startswith("transfer")]
                rows.append(
                    dict(
                        overlap=overlap,
                        seed=seed,
                        n=n,
                        **{m: r[m]["ari"] for m in args.methods},
                        **{f"theta_{m}": r[m]["theta"] for m in tm},
                        source_ari=r[tm[0]]["source_ari"] if tm else float("nan"),
                    )
                )
                print(
                    f"  sim {overlap:<10} seed={seed} n={n:<4} "
                    + " ".join(f"{m}={r[m]['ari']:.3f}" for m in args.methods)
                    + " theta="
                    + "/".join(str(r[m]["theta"]) for m in tm)
                    + (f" srcARI={r[tm[0]]['source_ari']:.2f}" if tm else ""),
                    flush=True,
                )
    tm = [m for m in args.methods if m.startswith("transfer")]
    lines = [
        f"Simulation ({args.n_genes} genes, {args.n_source} source cells, seeds {', '.join(map(str, args.seeds))}; "
        "ARI on the target, mean ± sd over seeds; theta: mean KTA choice)",
        "",
        "| overlap | target cells | "
        + " | ".join(HEAD[m] for m in args.methods)
        + f" | theta ({' / '.join(HEAD[m] for m in tm)}) | source ARI of W_src ({HEAD[tm[0]] if tm else '-'}) |",
        "|---|---|" + "---|" * len(args.methods) + "---|---|",
    ]
    for overlap in args.overlaps:
        for n in args.sizes:
            sel = [r for r in rows if r["overlap"] == overlap and r["n"] == n]
            cells = [f"{np.mean([r[m] for r in sel]):.3f} ± {np.std([r[m] for r in sel]):.3f}" for m in args.methods]
            lines.append(
                f"| {overlap} | {n} | "
                + " | ".join(cells)
                + " | "
                + " / ".join(f"{np.mean([r[f'theta_{m}'] for r in sel]):.2f}" for m in tm)
                + f" | {np.mean([r['source_ari'] for r in sel]):.2f} |"
            )
    return lines


# ---------------------------------------------------------------------------- real pairs
def bench_real(args, device):
    import anndata as ad

    pairs = []
    if (DATA / "baron_mouse1.h5ad").exists() and not args.quick:
        pairs.append(
            (
                "baron_mouse1 -> baron_mouse2",
                ad.read_h5ad(DATA / "baron_mouse1.h5ad"),
                ad.read_h5ad(DATA / "baron_mouse2.h5ad"),
            )
        )
    if (DATA / "panc8_small.h5ad").exists():
        p = ad.read_h5ad(DATA / "panc8_small.h5ad")
        techs = ["celseq2"] if args.quick else sorted(p.obs["batch"].unique())
        for tech in techs:
            pairs.append(
                (f"panc8_small: others -> {tech}", p[p.obs["batch"] != tech].copy(), p[p.obs["batch"] == tech].copy())
            )
    if not pairs:
        return ["(real data not found in ../shared/data)"]
    ms = args.methods
    tm = [m for m in ms if m.startswith("transfer")]
    lines = [
        "Real pairs (seed 0, defaults: SC3 gene filter, log2; k = true number of target types)",
        "",
        "| pair | target cells | k | genes | "
        + " | ".join(HEAD[m] for m in ms)
        + "".join(f" | theta, source ARI of W_src, matched type acc., time s ({HEAD[m]})" for m in tm)
        + " |",
        "|---|---|---|---|" + "---|" * (len(ms) + len(tm)),
    ]
    for name, src, trg in pairs:
        r = run_all(src, trg, 0, device, ms)
        k = trg.obs["cell_type"].nunique()
        print(f"  real {name}: " + " ".join(f"{m}={r[m]['ari']:.3f}" for m in ms), flush=True)
        lines.append(
            f"| {name} | {trg.n_obs} | {k} | {r['n_genes_used']} | "
            + " | ".join(f"{r[m]['ari']:.3f}" for m in ms)
            + "".join(
                f" | {r[m]['theta']}, {r[m]['source_ari']:.2f}, {r[m]['type_acc']:.2f}, {r[m]['seconds']:.1f}"
                for m in tm
            )
            + " |"
        )
    return lines


# ---------------------------------------------------------------------------- timing
def bench_timing(args, devices):
    lines = [
        "Wall time (seconds; simulated data, 2000 genes, 1000 source cells, k = 8, default SC3 ensemble)",
        "",
        "| device | target cells | source NMF fit | one SC3 pass (theta = 0.5) | full theta grid (11 values) |",
        "|---|---|---|---|---|",
    ]
    src, trg = simulate_transfer(1000, max(args.timing_sizes), "complete", n_genes=2000, seed=0)
    for dev in devices:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            t0 = time.perf_counter()
            model = NMFTransfer(seed=0, device=dev, verbose=False, gene_filter=False).fit(src)
            fit_s = time.perf_counter() - t0
        for n in args.timing_sizes:
            t = trg[:n].copy()
            t0 = time.perf_counter()
            model.replace(thetas=[0.5]).predict(t, n_clusters=8)
            one = time.perf_counter() - t0
            grid = "-"
            if n <= args.grid_timing_max:
                t0 = time.perf_counter()
                model.predict(t, n_clusters=8)
                grid = f"{time.perf_counter() - t0:.1f}"
            lines.append(f"| {dev} | {n} | {fit_s:.1f} | {one:.1f} | {grid} |")
            print(f"  timing {dev} n={n}: fit {fit_s:.1f}s, one pass {one:.1f}s, grid {grid}s", flush=True)
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_nmf_transfer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--parts", default="sim,real,timing")
    ap.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(HEAD),
        help="methods to compare (transfer_fixedW_capped: nmf_refine=False with theta <= 0.9)",
    )
    ap.add_argument("--device", default="cpu", help="device for the ARI parts (timing runs CPU and CUDA if present)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25, 100, 200])
    ap.add_argument("--overlaps", nargs="+", default=["complete", "incomplete", "none"])
    ap.add_argument("--n-genes", type=int, default=2000)
    ap.add_argument("--n-source", type=int, default=1000)
    ap.add_argument("--timing-sizes", type=int, nargs="+", default=[200, 500, 1000])
    ap.add_argument("--grid-timing-max", type=int, default=500, help="time the full theta grid up to this size")
    ap.add_argument("--paper-scale", action="store_true", help="10 000 genes, targets 10-800 cells (slow on CPU)")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--write", default=None, help="also write the tables to this markdown file")
    args = ap.parse_args(argv)
    if args.paper_scale:
        args.n_genes, args.sizes = 10000, [10, 50, 100, 200, 400, 600, 800]
    if args.quick:
        args.seeds, args.sizes, args.n_genes, args.n_source = [0], [25], 500, 300
        args.timing_sizes, args.grid_timing_max = [100], 100
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    header = [
        "# NMF transfer clustering benchmark",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), "
        f"{platform.processor() or platform.machine()}; "
        f"CUDA: {'yes (' + torch.cuda.get_device_name(0) + ')' if torch.cuda.is_available() else 'not available'}",
        "",
    ]
    out = list(header)
    parts = args.parts.split(",")
    t_all = time.perf_counter()
    if "sim" in parts:
        out += bench_sim(args, args.device) + [""]
    if "real" in parts:
        out += bench_real(args, args.device) + [""]
    if "timing" in parts:
        out += bench_timing(args, devices) + [""]
    out.append(f"(benchmark wall time {time.perf_counter() - t_all:.0f} s)")
    text = "\n".join(out)
    print(text)
    if args.write:
        Path(args.write).write_text(text + "\n")


if __name__ == "__main__":
    main()
