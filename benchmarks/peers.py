"""Peer tools run by the benchmark (Python side), and how each one is set up.

None of these is a pybridge dependency: they are imported only inside the
worker process that runs them, and a tool whose package is missing is recorded
as "not installed" by the harness (see :func:`availability`).

Annotation peers (trained on the reference, applied to the query; all on the
task's shared genes):

* ``logreg``: scikit-learn multinomial logistic regression (lbfgs, C=1, max_iter
  1000) on log1p(CPM). Confidence = top class probability. No rejection.
* ``celltypist``: a CellTypist model *trained on the reference* (``celltypist.train``
  defaults: logistic regression on all genes, no feature selection, no hub model),
  input log1p(counts normalised to 1e4) as CellTypist requires; prediction
  ``mode="best match"``. Confidence = top class probability (CellTypist's
  one-vs-rest sigmoid). With scikit-learn >= 1.8 (which dropped ``multi_class``)
  CellTypist 1.7's trainer fails; the worker then swaps in the same one-vs-rest
  logistic regression fitted class by class (``_ovr_logistic_regression``). Rejection: the native "prob match" rule with
  ``p_thres=0.5``; a cell is rejected when no class reaches 0.5.
* ``scanvi``: scvi-tools scANVI (needs scvi-tools; run from a separate environment,
  ``.venv-bench`` or ``$PYBRIDGE_BENCH_SCVI_PYTHON``): scVI on reference + query
  (2000 HVGs chosen on the reference, batch = reference/query), then scANVI with the
  query unlabelled; epochs capped (scVI 50, scANVI 20; the scvi-tools tutorial uses 20
  for scANVI) to fit the CPU budget. Confidence = top soft prediction. No rejection.

Clustering peers (query alone, true K known):

* ``pca_kmeans``: scanpy normalize_total(1e4) + log1p + 2000 HVGs (Seurat flavour)
  + scale(max 10) + 50 PCs, then k-means with the true K (10 restarts).
* ``pca_leiden``: the same PCs, exact 15-neighbour graph (scikit-learn transformer), Leiden with the resolution
  found by bisection so that the number of clusters equals the true K (up to 25
  steps on [0.01, 5]; the reached K and resolution are recorded). The true K is
  an advantage a real user does not have.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
UNASSIGNED = "Unassigned"


def _csr(a) -> sp.csr_matrix:
    X = a.X
    return sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else sp.csr_matrix(np.asarray(X, np.float32))


def lognorm(X: sp.csr_matrix, target: float) -> sp.csr_matrix:
    lib = np.asarray(X.sum(axis=1)).ravel()
    lib[lib == 0] = 1.0
    Y = sp.diags((target / lib).astype(np.float32)) @ X
    Y = Y.tocsr()
    Y.data = np.log1p(Y.data)
    return Y


# ---------------------------------------------------------------- annotation peers
def run_logreg(ref, query, opts, seed, threads):
    from sklearn.linear_model import LogisticRegression

    Xr, Xq = lognorm(_csr(ref), 1e6), lognorm(_csr(query), 1e6)
    y = ref.obs["cell_type"].astype(str).to_numpy()
    t0 = time.perf_counter()
    clf = LogisticRegression(max_iter=int(opts.get("max_iter", 1000)), C=float(opts.get("C", 1.0)), random_state=seed)
    clf.fit(Xr, y)
    P = clf.predict_proba(Xq)
    secs = time.perf_counter() - t0
    lab = clf.classes_[P.argmax(1)].astype(str)
    conf = P.max(1)
    out = pd.DataFrame({"label": lab, "raw_label": lab, "confidence": conf, "score": conf, "rejected": 0})
    return out, secs, {"n_iter": int(np.max(clf.n_iter_))}


def _ovr_logistic_regression(indata, labels, C, solver, max_iter, n_jobs, **kwargs):
    """CellTypist's classifier (one-vs-rest logistic regression) for scikit-learn >= 1.8.

    CellTypist 1.7 builds ``LogisticRegression(multi_class="ovr")``; scikit-learn
    removed ``multi_class``. This fits the same one binary model per class and
    stores them in one LogisticRegression (``coef_`` classes x genes), which is all
    CellTypist uses afterwards (``decision_function`` + sigmoid).
    """
    from sklearn.linear_model import LogisticRegression

    solver = solver or ("sag" if len(labels) > 50000 else "lbfgs")
    max_iter = max_iter or (1000 if len(labels) < 50000 else 200)  # CellTypist's own default rule
    labels = np.asarray(labels)
    classes = np.unique(labels)
    make = lambda: LogisticRegression(C=C, solver=solver, max_iter=max_iter, **kwargs)  # noqa: E731
    if len(classes) <= 2:
        return make().fit(indata, labels)
    coef, icpt, iters = [], [], []
    for c in classes:
        m = make().fit(indata, (labels == c).astype(int))
        coef.append(m.coef_[0])
        icpt.append(m.intercept_[0])
        iters.append(int(m.n_iter_[0]))
    clf = make()
    clf.coef_, clf.intercept_, clf.classes_ = np.vstack(coef), np.asarray(icpt), classes
    clf.n_iter_ = np.asarray(iters)
    clf.n_features_in_ = clf.coef_.shape[1]
    return clf


def run_celltypist(ref, query, opts, seed, threads):
    import importlib

    import anndata as ad
    import celltypist
    import sklearn

    if tuple(int(x) for x in sklearn.__version__.split(".")[:2]) >= (1, 8):
        importlib.import_module("celltypist.train")._LRClassifier = _ovr_logistic_regression

    np.random.seed(seed)
    Xr, Xq = lognorm(_csr(ref), 1e4), lognorm(_csr(query), 1e4)
    genes = np.asarray(ref.var_names, dtype=str)
    y = ref.obs["cell_type"].astype(str).to_numpy()
    qa = ad.AnnData(Xq, obs=pd.DataFrame(index=query.obs_names.astype(str)), var=pd.DataFrame(index=genes))
    t0 = time.perf_counter()
    model = celltypist.train(Xr, labels=y, genes=genes, n_jobs=threads, check_expression=False, **opts)
    res = celltypist.annotate(qa, model=model, mode="best match")
    secs = time.perf_counter() - t0
    prob = res.probability_matrix.loc[qa.obs_names]
    classes = prob.columns.to_numpy().astype(str)
    P = prob.to_numpy()
    raw = classes[P.argmax(1)]
    conf = P.max(1)
    rejected = conf < 0.5
    lab = np.where(rejected, UNASSIGNED, raw)
    out = pd.DataFrame(
        {"label": lab, "raw_label": raw, "confidence": conf, "score": conf, "rejected": rejected.astype(int)}
    )
    return out, secs, {}


def _epochs(value):
    return None if value in (None, "default") else int(value)


def _trained_epochs(model, asked):
    hist = getattr(model, "history", None) or {}
    elbo = hist.get("elbo_train")
    return int(len(elbo)) if elbo is not None else asked


def run_scanvi(ref, query, opts, seed, threads):
    import anndata as ad
    import scvi
    import torch

    torch.set_num_threads(max(1, threads))
    scvi.settings.seed = seed
    scvi.settings.num_threads = max(1, threads)
    scvi.settings.dl_num_workers = 0
    n_hvg = int(opts.get("n_hvg", 2000))
    # "default": let scvi-tools pick (max_epochs=None, its size heuristic)
    scvi_epochs = _epochs(opts.get("scvi_epochs", 50))
    scanvi_epochs = _epochs(opts.get("scanvi_epochs", 20))
    Xr, Xq = _csr(ref), _csr(query)
    t0 = time.perf_counter()
    # HVGs on the reference (dispersion of log1p(1e4-normalised) expression), the same genes for the query
    L = lognorm(Xr, 1e4)
    mean = np.asarray(L.mean(axis=0)).ravel()
    var = np.asarray(L.multiply(L).mean(axis=0)).ravel() - mean**2
    disp = np.where(mean > 0, var / np.maximum(mean, 1e-12), 0)
    keep = np.sort(np.argsort(-disp)[: min(n_hvg, Xr.shape[1])])
    X = sp.vstack([Xr[:, keep], Xq[:, keep]]).tocsr()
    X.data = np.round(X.data)  # scVI's likelihood needs counts (panc8 holds non-integer values)
    X.eliminate_zeros()
    labels = np.concatenate([ref.obs["cell_type"].astype(str).to_numpy(), np.full(Xq.shape[0], "Unknown")])
    obs = pd.DataFrame(
        {"batch": ["ref"] * Xr.shape[0] + ["query"] * Xq.shape[0], "label": labels},
        index=[f"r{i}" for i in range(Xr.shape[0])] + [f"q{i}" for i in range(Xq.shape[0])],
    )
    a = ad.AnnData(X, obs=obs)
    scvi.model.SCVI.setup_anndata(a, batch_key="batch")
    vae = scvi.model.SCVI(a, n_layers=2, n_latent=30)
    kw = (
        dict(accelerator="cpu", enable_progress_bar=False)
        if not torch.cuda.is_available()
        else dict(enable_progress_bar=False)
    )
    vae.train(max_epochs=scvi_epochs, **kw)
    lvae = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category="Unknown", labels_key="label")
    lvae.train(max_epochs=scanvi_epochs, n_samples_per_label=100, **kw)
    P = lvae.predict(a[a.obs["batch"] == "query"], soft=True)
    secs = time.perf_counter() - t0
    classes = np.asarray(P.columns, dtype=str)
    Pm = P.to_numpy()
    raw = classes[Pm.argmax(1)]
    conf = Pm.max(1)
    out = pd.DataFrame({"label": raw, "raw_label": raw, "confidence": conf, "score": conf, "rejected": 0})
    return (
        out,
        secs,
        {
            "scvi_epochs": _trained_epochs(vae, scvi_epochs),
            "scanvi_epochs": _trained_epochs(lvae, scanvi_epochs),
            "n_hvg": int(len(keep)),
            "scvi_version": scvi.__version__,
        },
    )


# ---------------------------------------------------------------- clustering peers
def _pcs(query, seed, n_hvg=2000, n_pcs=50):
    import anndata as ad
    import scanpy as sc

    b = ad.AnnData(
        _csr(query),
        obs=pd.DataFrame(index=query.obs_names.astype(str)),
        var=pd.DataFrame(index=query.var_names.astype(str)),
    )
    sc.pp.filter_genes(b, min_cells=1)
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    sc.pp.highly_variable_genes(b, flavor="seurat", n_top_genes=min(n_hvg, b.n_vars))
    b = b[:, b.var["highly_variable"]].copy()
    sc.pp.scale(b, max_value=10)
    sc.tl.pca(b, n_comps=min(n_pcs, b.n_obs - 1, b.n_vars - 1), random_state=seed)
    return b


def run_pca_kmeans(ref, query, opts, seed, threads):
    from sklearn.cluster import KMeans

    k = int(opts["n_clusters"])
    t0 = time.perf_counter()
    b = _pcs(query, seed)
    lab = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(b.obsm["X_pca"])
    secs = time.perf_counter() - t0
    return pd.DataFrame({"cluster": lab.astype(str)}), secs, {"n_clusters": k}


def leiden_bisect(b, k: int, seed: int, lo: float = 0.01, hi: float = 5.0, steps: int = 25):
    """Leiden clusters of the kNN graph in ``b`` with a resolution bisected until there are ``k`` clusters."""
    import scanpy as sc

    def at(res):
        sc.tl.leiden(
            b, resolution=res, random_state=seed, flavor="igraph", n_iterations=2, directed=False, key_added="_l"
        )
        lab = b.obs["_l"].astype(str).to_numpy()
        return lab, len(set(lab))

    best = None
    res = 1.0
    for _ in range(steps):
        lab, n = at(res)
        if best is None or abs(n - k) < abs(best[1] - k):
            best = (lab, n, res)
        if n == k:
            break
        if n < k:
            lo = res
        else:
            hi = res
        res = (lo + hi) / 2
    return best


def run_pca_leiden(ref, query, opts, seed, threads):
    import scanpy as sc

    k = int(opts["n_clusters"])
    t0 = time.perf_counter()
    b = _pcs(query, seed)
    # exact kNN through scikit-learn: scanpy 1.11's default (pynndescent above 4096 cells) fails with
    # scipy's sparse arrays here ("csr_array has no attribute getnnz"); below 4096 cells both are exact
    sc.pp.neighbors(b, n_neighbors=15, random_state=seed, transformer="sklearn")
    lab, n, res = leiden_bisect(b, k, seed)
    secs = time.perf_counter() - t0
    return pd.DataFrame({"cluster": lab}), secs, {"n_clusters": n, "resolution": round(res, 4)}


PY_PEERS = {
    "logreg": run_logreg,
    "celltypist": run_celltypist,
    "scanvi": run_scanvi,
    "scanvi_default": run_scanvi,
    "pca_kmeans": run_pca_kmeans,
    "pca_leiden": run_pca_leiden,
}


# ---------------------------------------------------------------- availability
def scvi_python() -> str | None:
    """A Python interpreter that can import scvi-tools: $PYBRIDGE_BENCH_SCVI_PYTHON, this one, or .venv-bench."""
    env = os.environ.get("PYBRIDGE_BENCH_SCVI_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("scvi") is not None:
        return sys.executable
    cand = ROOT / ".venv-bench" / "bin" / "python"
    return str(cand) if cand.exists() else None


def availability(tool: str) -> tuple[bool, str]:
    """(available, reason when not) without importing the tool."""
    import shutil
    import subprocess

    def has(mod):
        return importlib.util.find_spec(mod) is not None

    if tool == "celltypist":
        return (True, "") if has("celltypist") else (False, "not installed (pip install celltypist)")
    if tool in ("pca_kmeans", "pca_leiden"):
        if not has("scanpy"):
            return False, "not installed (scanpy)"
        if tool == "pca_leiden" and not (has("leidenalg") or has("igraph")):
            return False, "not installed (leidenalg / igraph)"
        return True, ""
    if PY_PEERS.get(tool) is run_scanvi:  # scanvi and its variants run in the scvi-tools environment
        py = scvi_python()
        if py is None:
            return False, "not installed (scvi-tools; see benchmarks/README.md for the separate .venv-bench)"
        try:
            r = subprocess.run([py, "-c", "import scvi, anndata"], capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as err:
            return False, f"not installed ({py} cannot run: {type(err).__name__})"
        if r.returncode != 0:
            return (
                False,
                f"not installed ({py} cannot import scvi: "
                f"{r.stderr.strip().splitlines()[-1][:120] if r.stderr.strip() else 'error'})",
            )
        return True, ""
    if tool in ("seurat", "singler"):
        if shutil.which("Rscript") is None:
            return False, "not installed (no Rscript)"
        pkg = {"seurat": "Seurat", "singler": "SingleR"}[tool]
        try:
            r = subprocess.run(
                ["Rscript", "-e", f"cat(as.character(packageVersion('{pkg}')))"],
                capture_output=True,
                text=True,
                timeout=300,
            )
        except (OSError, subprocess.SubprocessError) as err:
            return False, f"not installed (Rscript failed: {type(err).__name__})"
        if r.returncode != 0:
            return False, f"not installed (R package {pkg})"
        return True, ""
    return True, ""
