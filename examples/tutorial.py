"""pybridge from Python: a tutorial that runs headless.

    .venv/bin/python examples/tutorial.py [--data ../shared/data] [--out out/tutorial] [--epochs 30]

Story: FACS-sorted PBMC (Zheng et al. 2017, as packaged by CASi). The reference has
four sorted populations; the query has those four plus B cells, which the reference
has never seen. We

1. annotate the query with scNym and with JIND through the AnnData API and compare
   how each handles the unseen B cells (rejection to "Unassigned");
2. train a scNym model once, save it, load it back and annotate new cells with it;
3. do the same from the command line (`pybridge annotate / train / predict / cluster`);
4. read a Seurat object from an `.rds` file through rpy2 + anndata2ri, annotate it in
   Python and write the labels back into a Seurat `.rds` (needs R and the R package).

Every step prints what it did; figures go to --out (needs matplotlib). The neural
methods are capped at --epochs epochs (default 30, which is JIND's default; scNym's
own default is up to 400 with early stopping; the command-line JIND run also skips
the GAN alignment) so the tutorial finishes in a few minutes on a laptop CPU: the
numbers it prints are therefore a little below what the defaults give.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

import pybridge

ROOT = Path(__file__).resolve().parents[1]


def section(title: str) -> None:
    print(f"\n=== {title} ===")


def accuracy(adata, key, truth="cell_type", keep=None):
    """Accuracy of adata.obs[key] among cells whose true type passes `keep`, ignoring "Unassigned"."""
    pred = adata.obs[key].astype(str).to_numpy()
    true = adata.obs[truth].astype(str).to_numpy()
    m = np.ones(len(pred), bool) if keep is None else keep
    assigned = m & (pred != "Unassigned")
    return float((pred[assigned] == true[assigned]).mean()), float((pred[m] == "Unassigned").mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="folder with the .h5ad datasets")
    p.add_argument("--out", default=str(ROOT / "out" / "tutorial"), help="folder for outputs and figures")
    p.add_argument("--epochs", type=int, default=30, help="cap on training epochs of the neural methods")
    p.add_argument("--skip-r", action="store_true", help="skip the rpy2 / .rds part")
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ data
    section("data")
    ref = ad.read_h5ad(data / "casi_zheng_sorted_train.h5ad")
    query = ad.read_h5ad(data / "casi_zheng_sorted_test.h5ad")
    print(f"reference: {ref.n_obs} cells x {ref.n_vars} genes; types {sorted(ref.obs['cell_type'].unique())}")
    print(f"query:     {query.n_obs} cells; types {query.obs['cell_type'].value_counts().to_dict()}")
    unseen = ~query.obs["cell_type"].isin(ref.obs["cell_type"].unique()).to_numpy()
    print(f"{unseen.sum()} query cells ({sorted(query.obs['cell_type'][unseen].unique())}) have no reference class")

    # ------------------------------------------------------------------ AnnData API
    section("scNym and JIND through the AnnData API")
    # scNym's default discovery mode keeps unconfident query cells out of the pseudolabel and
    # adversarial losses (the paper's setting for new cell types); reject=True then labels cells
    # far from every reference cell in the embedding "Unassigned".
    pybridge.scnym(query, ref, labels_key="cell_type", seed=0, n_epochs=args.epochs, reject=True, verbose=False)
    pybridge.jind(query, ref, labels_key="cell_type", seed=0, n_epochs=min(args.epochs, 30), verbose=False)
    print("new obs columns:", [c for c in query.obs.columns if c.startswith(("scnym", "jind"))])
    print("new obsm entries:", list(query.obsm.keys()))
    rows = []
    for key in ("scnym", "jind"):
        acc, rej_seen = accuracy(query, key, keep=~unseen)
        _, rej_unseen = accuracy(query, key, keep=unseen)
        raw = query.obs[f"{key}_raw"].astype(str).to_numpy()
        raw_acc = float((raw[~unseen] == query.obs["cell_type"].astype(str).to_numpy()[~unseen]).mean())
        rows.append(
            {
                "method": key,
                "accuracy before rejection": raw_acc,
                "accuracy of kept cells": acc,
                "known types rejected": rej_seen,
                "B cells rejected": rej_unseen,
            }
        )
    table = pd.DataFrame(rows).set_index("method")
    print(table.round(3).to_string())
    print("\nJIND labels of the query's B cells:", query.obs.loc[unseen, "jind"].astype(str).value_counts().to_dict())
    print("parameters and timings are in uns:", sorted(query.uns["scnym"].keys())[:8], "...")

    # ------------------------------------------------------------------ estimator + model files
    section("train once, save, load, predict")
    model_dir = out / "zheng_scnym_model"
    shutil.rmtree(model_dir, ignore_errors=True)
    model = pybridge.ScNym(seed=0, n_epochs=args.epochs, verbose=False).fit(ref)
    model.save(model_dir)
    print("model files:", sorted(f.name for f in model_dir.iterdir()))
    loaded = pybridge.ScNym.load(model_dir)
    # a new query with its genes in another order and 10% of them missing: zero-filled, reported
    rng = np.random.default_rng(0)
    keep_genes = rng.permutation(query.n_vars)[: int(0.9 * query.n_vars)]
    shuffled = query[:, keep_genes].copy()
    result = loaded.predict(shuffled)
    result.to_adata(shuffled, key_added="scnym_model")
    print("gene overlap reported:", {k: v for k, v in result.params["gene_overlap"].items() if k.startswith("n_")})
    acc, _ = accuracy(shuffled, "scnym_model", keep=~unseen)
    print(f"accuracy on known types with 10% of genes missing: {acc:.3f}")

    # ------------------------------------------------------------------ figures
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no figures)")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key in zip(axes, ("scnym", "jind")):
            conf = query.obs[f"{key}_confidence"].to_numpy()
            ax.hist(
                [conf[~unseen], conf[unseen]],
                bins=30,
                range=(0, 1),
                stacked=True,
                label=["types in the reference", "B cells (unseen)"],
                color=["#4c72b0", "#dd8452"],
            )
            ax.set_title(f"{key}: confidence of the top class")
            ax.set_xlabel(f"obs['{key}_confidence']")
            ax.set_ylabel("cells")
            ax.legend(loc="upper left")
        fig.tight_layout()
        fig.savefig(out / "confidence.png", dpi=100)
        plt.close(fig)
        print("figure:", out / "confidence.png")
        # pybridge.pl: is a confidence of 0.8 right 80% of the time (reliability diagram, ECE in the title)?
        # and where do JIND's per-class thresholds cut its correct and wrong predictions?
        pybridge.pl.reliability(query, "scnym", truth_key="cell_type").savefig(out / "reliability_scnym.png", dpi=100)
        pybridge.pl.confidence(query, "jind", truth_key="cell_type").savefig(out / "confidence_jind.png", dpi=100)
        print("figures:", out / "reliability_scnym.png", out / "confidence_jind.png")

    # ------------------------------------------------------------------ command line
    section("the same from the command line")
    ref_file, query_file = data / "casi_zheng_sorted_train.h5ad", data / "casi_zheng_sorted_test.h5ad"
    exe = [sys.executable, "-m", "pybridge.cli"]
    commands = [
        exe
        + [
            "annotate",
            "--reference",
            str(ref_file),
            "--query",
            str(query_file),
            "--method",
            "jind",
            "--set",
            f"n_epochs={min(args.epochs, 30)}",
            "--set",
            "align=false",
            "--out",
            str(out / "query_jind.h5ad"),
            "--csv",
            str(out / "query_jind.csv"),
            "--quiet",
        ],
        exe
        + [
            "train",
            "--reference",
            str(ref_file),
            "--out",
            str(out / "cli_model"),
            "--set",
            f"n_epochs={args.epochs}",
            "--quiet",
        ],
        exe
        + [
            "predict",
            "--model",
            str(out / "cli_model"),
            "--query",
            str(query_file),
            "--csv",
            str(out / "query_scnym.csv"),
            "--quiet",
        ],
        exe
        + [
            "cluster",
            "--method",
            "cicl",
            "--input",
            str(query_file),
            "--n-clusters",
            "5",
            "--csv",
            str(out / "query_cicl.csv"),
            "--set",
            f"n_epochs={min(args.epochs, 20)}",
            "--quiet",
        ],
    ]
    for cmd in commands:
        shown = " ".join(["pybridge"] + cmd[3:]).replace(str(data) + "/", "").replace(str(out) + "/", "")
        print("$", shown)
        subprocess.run(cmd, check=True)
    print(pd.read_csv(out / "query_jind.csv", index_col=0).head(3).to_string())
    # a bad input exits with status 2 and one line saying what to fix
    bad = subprocess.run(
        exe + ["annotate", "--reference", str(ref_file), "--query", str(query_file), "--labels-key", "celltype"],
        capture_output=True,
        text=True,
    )
    print(f"$ pybridge annotate ... --labels-key celltype   -> exit {bad.returncode}: {bad.stderr.strip()}")

    # ------------------------------------------------------------------ Seurat .rds through rpy2
    section("a Seurat object from .rds, through rpy2 + anndata2ri")
    if args.skip_r:
        print("skipped (--skip-r)")
        return 0
    try:
        import pybridge.r as pr

        rds = Path(pr._rpy2()[1].r('system.file("extdata", "panc8_small.rds", package = "pybridge")')[0])
    except Exception as err:  # R, rpy2 or the R package missing
        print(f"skipped: {err}")
        return 0
    pr._rpy2()[1].r("suppressPackageStartupMessages(library(SeuratObject))")  # quiet package start-up
    seu = pr.read_rds(rds)  # AnnData: raw counts in X, Seurat's meta.data in obs
    print(f"read {rds.name}: {seu.n_obs} cells x {seu.n_vars} genes; obs columns {list(seu.obs.columns)}")
    is_query = (seu.obs["tech"] == "indrop").to_numpy()
    q, r = seu[is_query].copy(), seu[~is_query].copy()
    # the estimator returns an AnnotationResult, which pybridge.r can write into an R object
    res = pybridge.ScNym(seed=0, n_epochs=args.epochs, verbose=False).fit(r, query=q).predict(q)
    # write the result into the Seurat object (the inDrop cells only) and save it as .rds
    ro = pr._rpy2()[1]
    ro.r(f'saveRDS(subset(readRDS("{rds}"), tech == "indrop"), "{out / "indrop.rds"}")')
    pr.write_result_rds(out / "indrop.rds", out / "indrop_annotated.rds", res, key_added="scnym")
    check = ro.r(f'''
        local({{ s <- readRDS("{out / "indrop_annotated.rds"}")
                 c(class = class(s)[1], columns = paste(colnames(s[[]]), collapse = " "),
                   accuracy = sprintf("%.3f", mean(as.character(s$predicted.scnym) == s$cell_type)),
                   reductions = paste(SeuratObject::Reductions(s), collapse = " ")) }})''')
    for name, value in zip(check.names, check):
        print(f"  {name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
