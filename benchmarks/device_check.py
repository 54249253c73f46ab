"""Run the CUDA path of every pybridge method once and compare it with the CPU path.

    python -m benchmarks.device_check [--data ../shared/data] [--device cuda] [--out device_check.md]

For each method (scNym, JIND, ItClust, CICL, NMF transfer) on panc8_small (inDrop cells as the query,
the other four technologies as the reference; CICL clusters all 500 cells) it fits and predicts once on
the CPU and once on ``--device``, both with seed 0, and reports:

* where the fitted model's tensors live (every torch module and tensor the estimator holds),
* accuracy (annotation) or ARI (clustering) of each run against the published labels,
* how many labels the two runs share (GPU kernels sum in another order, so a few cells may differ),
* that a model saved after the GPU fit loads on the CPU and gives the GPU model's labels again,
* the wall time of each fit + predict (the GPU's first call is warmed up beforehand).

A failure of one method is reported in its row and the others still run; the exit status is 1 when any
row failed. ``--device cpu`` runs the whole script without a GPU (a dry run of the script itself).
Made for ``scripts/gpu_check.sh``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.formatting import md_table
from benchmarks.metrics import clustering_scores
from benchmarks.tasks import load_pair

ROOT = Path(__file__).resolve().parents[1]
LABELS = "celltype"
QUERY_TECH = "indrop"


def tensor_devices(obj, depth: int = 2) -> Counter:
    """How many tensors of each device type an estimator holds (module parameters and buffers, and tensors in
    its attributes, dict / list values and pybridge helper objects, ``depth`` levels down)."""
    import torch

    found: Counter = Counter()

    def visit(v, d):
        if isinstance(v, torch.nn.Module):
            found.update(t.device.type for t in [*v.parameters(), *v.buffers()])
        elif isinstance(v, torch.Tensor):
            found[v.device.type] += 1
        elif d > 0 and isinstance(v, dict):
            for x in v.values():
                visit(x, d - 1)
        elif d > 0 and isinstance(v, (list, tuple)):
            for x in v:
                visit(x, d - 1)
        elif d > 0 and hasattr(v, "__dict__") and type(v).__module__.startswith("pybridge"):
            for x in vars(v).values():
                visit(x, d - 1)

    for value in vars(obj).values():
        visit(value, depth)
    return found


def _labels(result) -> np.ndarray:
    return np.asarray(result.raw_labels if hasattr(result, "raw_labels") else result.clusters).astype(str)


def _score(kind: str, labels: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(labels == truth)) if kind == "annotation" else clustering_scores(labels, truth)["ari"]


def _agreement(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    """Share of cells with the same label (annotation) or ARI between the two partitions (clustering)."""
    return _score(kind, a, b)


def methods(ref, query, both):
    """(name, kind, fit(device) -> estimator, predict(estimator) -> result, estimator class, cells predicted).

    The kind and the estimator class come from pybridge's method registry."""
    import pybridge  # noqa: F401 (importing pybridge registers its methods)
    from pybridge.models._registry import get_method

    fast = {"verbose": False, "seed": 0}
    k_both, k_query = int(both.obs[LABELS].nunique()), int(query.obs[LABELS].nunique())

    def new(name, dev, **kw):
        return get_method(name).estimator(device=dev, **fast, **kw)

    def on_query(m):
        return m.predict(query)

    specs = [
        ("scnym", lambda dev: new("scnym", dev).fit(ref, labels_key=LABELS, query=query), on_query, query),
        ("jind", lambda dev: new("jind", dev).fit(ref, labels_key=LABELS, query=query), on_query, query),
        ("linear", lambda dev: new("linear", dev).fit(ref, labels_key=LABELS, query=query), on_query, query),
        ("itclust", lambda dev: new("itclust", dev).fit(ref, labels_key=LABELS, query=query), on_query, query),
        ("cicl", lambda dev: new("cicl", dev, n_clusters=k_both).fit(both), lambda m: m.predict(both), both),
        (
            "nmf_transfer",
            lambda dev: new("nmf_transfer", dev).fit(ref, labels_key=LABELS),
            lambda m: m.predict(query, n_clusters=k_query),
            query,
        ),
    ]
    return [
        (name, get_method(name).kind, fit, predict, get_method(name).estimator, target)
        for name, fit, predict, target in specs
    ]


def warm_up(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        x = torch.randn(512, 512, device=device)
        (x @ x).sum().item()
        torch.cuda.synchronize()


def check_one(name, kind, fit, predict, cls, target, device) -> dict:
    import torch

    truth = target.obs[LABELS].astype(str).to_numpy()
    row = {"method": name, "kind": kind, "status": "ok", "error": ""}
    try:
        t0 = time.perf_counter()
        cpu_res = predict(fit("cpu"))
        row["cpu_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        gpu_model = fit(device)
        gpu_res = predict(gpu_model)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        row["gpu_s"] = time.perf_counter() - t0
        held = tensor_devices(gpu_model)
        row["tensors_on"] = ", ".join(f"{k} {n}" for k, n in sorted(held.items())) or "none"
        row["result_device"] = str(gpu_res.params.get("device", "?"))
        cpu_lab, gpu_lab = _labels(cpu_res), _labels(gpu_res)
        row["cpu_score"] = _score(kind, cpu_lab, truth)
        row["gpu_score"] = _score(kind, gpu_lab, truth)
        row["agreement"] = _agreement(kind, cpu_lab, gpu_lab)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}_model"
            gpu_model.save(path)
            loaded = cls.load(path, device="cpu", verbose=False)
            row["reload_same"] = float(np.mean(_labels(predict(loaded)) == gpu_lab))
        if device.startswith("cuda"):
            row["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        want = device.split(":")[0]
        if not held.get(want):  # some CPU copies (e.g. for saving) are fine; none on the device is not
            row["status"] = "FAIL"
            row["error"] = f"no fitted tensor on {want} ({row['tensors_on']})"
        if not row["result_device"].startswith(want):
            row["status"] = "FAIL"
            row["error"] += f" result params say device {row['result_device']}"
    except Exception as err:  # reported in the table; the other methods still run
        row["status"] = "ERROR"
        row["error"] = f"{type(err).__name__}: {err}"
        traceback.print_exc()
    return row


COLUMNS = {
    "method": "method",
    "status": "status",
    "tensors_on": "tensors on",
    "cpu_score": "CPU acc/ARI",
    "gpu_score": "GPU acc/ARI",
    "agreement": "CPU~GPU",
    "reload_same": "GPU model reloaded on CPU: same labels",
    "cpu_s": "CPU s",
    "gpu_s": "GPU s",
    "gpu_peak_mb": "GPU peak MB",
    "error": "error",
}


def table(rows: list[dict]) -> str:
    df = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    df["error"] = df["error"].fillna("").astype(str).str.replace("|", "/")
    return md_table(df, list(COLUMNS), list(COLUMNS.values()), nd={"cpu_s": 1, "gpu_s": 1, "gpu_peak_mb": 0})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--methods", default=None, help="comma-separated subset of scnym,jind,linear,itclust,cicl,nmf_transfer"
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for the CPU runs")
    p.add_argument("--out", type=Path, default=None, help="also write the table (Markdown) here")
    a = p.parse_args(argv)
    import anndata as ad
    import torch

    import pybridge

    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # data notes (e.g. NMF's source fit), not failures
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("device_check: --device cuda, but torch.cuda.is_available() is False")
    ref, query = load_pair(a.data, f"panc8:{QUERY_TECH}")
    both = ad.concat([ref, query])
    warm_up(a.device)
    chosen = set(a.methods.split(",")) if a.methods else None
    rows = []
    for spec in methods(ref, query, both):
        if chosen and spec[0] not in chosen:
            continue
        row = check_one(*spec, device=a.device)
        rows.append(row)
        print(
            f"[device_check] {row['method']:13s} {row['status']:6s}  ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in row.items()
                if k not in ("method", "status", "kind")
            ),
            flush=True,
        )
    name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "CPU (dry run)"
    head = (
        f"Device check: {name}; torch {torch.__version__}; pybridge {pybridge.__version__}; "
        f"numpy {np.__version__}; panc8_small ({ref.n_obs} reference / {query.n_obs} query cells), seed 0."
    )
    md = head + "\n\n" + table(rows) + "\n"
    print(md)
    if a.out:
        a.out.write_text(md)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
