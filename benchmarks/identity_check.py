"""Check that a refactoring left every method's outputs unchanged.

``python -m benchmarks.identity_check record DIR`` runs the five methods (seed 0,
defaults, CPU) on three dev tasks through the functional API and writes, per task
and method, every output the method adds to the query (``obs`` columns and
``obsm`` matrices) to ``DIR/outputs/<task>__<method>.npz``. It also fits each
estimator on the panc8 inDrop task, saves it under ``DIR/models/<method>`` and
records what the saved model predicts.

``python -m benchmarks.identity_check compare DIR`` repeats the same runs with the
code in the working tree and reports, for each output, whether it is bit-identical
to the recorded one; it also loads the recorded model directories with the
current code (old models must still load) and compares the saved files (weights
byte for byte, metadata apart from timings and the package version).
Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .tasks import load_pair

TASKS = ["panc8:indrop", "cellbench_celseq2->dropseq", "zheng_train->test"]
METHODS = ["scnym", "jind", "itclust", "cicl", "nmf_transfer"]
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _fn(method: str):
    import pybridge

    return getattr(pybridge, method)


def run_method(method: str, ref, query):
    """The query annotated by ``method`` (a copy), through the public functional API."""
    fn = _fn(method)
    q = query.copy()
    if method == "cicl":
        return fn(q, seed=0, device="cpu", verbose=False, copy=True)
    if method == "nmf_transfer":
        return fn(q, reference=ref, labels_key="cell_type", seed=0, device="cpu", verbose=False, copy=True)
    return fn(q, ref, labels_key="cell_type", seed=0, device="cpu", verbose=False, copy=True)


def outputs(adata, key: str) -> dict[str, np.ndarray]:
    """Every obs column and obsm matrix named after ``key``, as arrays."""
    out = {}
    for col in adata.obs.columns:
        if col == key or col.startswith(key + "_") or col.startswith(key + "."):
            out[f"obs/{col}"] = np.asarray(
                adata.obs[col].astype(str) if adata.obs[col].dtype.name == "category" else adata.obs[col]
            )
    for name in adata.obsm:
        if key in name:
            out[f"obsm/{name}"] = np.asarray(adata.obsm[name])
    return out


def _estimator(method: str):
    """The estimator class (by name, so that this script also runs on trees from before the registry)."""
    import pybridge

    names = {"scnym": "ScNym", "jind": "JIND", "itclust": "ItClust", "cicl": "CICL", "nmf_transfer": "NMFTransfer"}
    return getattr(pybridge, names[method])


def fit_model(method: str, ref, query):
    est = _estimator(method)(seed=0, device="cpu", verbose=False)
    if method in ("scnym", "jind", "itclust"):
        return est.fit(ref, labels_key="cell_type", query=query)
    if method == "cicl":
        return est.fit(query)
    return est.fit(ref, labels_key="cell_type")


def load_model(method: str, path):
    return _estimator(method).load(path, device="cpu", verbose=False)


def model_outputs(model, query) -> dict[str, np.ndarray]:
    res = model.predict(query.copy())
    return outputs(res.to_adata(query.copy(), "m", copy=True), "m")


def _strip(doc):
    """Model metadata without what legitimately changes between runs (timings, package version)."""
    if isinstance(doc, dict):
        return {
            k: _strip(v) for k, v in doc.items() if k not in ("timings", "pybridge_version") and not k.endswith("_s")
        }
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


def collect(data: Path, out: Path, save_models_to: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        ref, query = load_pair(data, task)
        for method in METHODS:
            ad = run_method(method, ref, query)
            np.savez(out / f"{task.replace(':', '_').replace('->', '_to_')}__{method}.npz", **outputs(ad, method))
            print(f"  {task} {method}: done", flush=True)
    ref, query = load_pair(data, TASKS[0])
    for method in METHODS:
        model = fit_model(method, ref, query)
        model.save(save_models_to / method)
        np.savez(out / f"model__{method}.npz", **model_outputs(model, query))
        print(f"  model {method}: saved", flush=True)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def compare_npz(old: Path, new: Path) -> list[str]:
    a, b = np.load(old, allow_pickle=False), np.load(new, allow_pickle=False)
    bad = [f"{k}: only in {'old' if k in a.files else 'new'}" for k in sorted(set(a.files) ^ set(b.files))]
    bad += [f"{k}: differs" for k in sorted(set(a.files) & set(b.files)) if not _same(a[k], b[k])]
    return bad


def compare(data: Path, recorded: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        collect(data, tmp / "outputs", tmp / "models")
        rows, failed = [], False
        for old in sorted((recorded / "outputs").glob("*.npz")):
            new = tmp / "outputs" / old.name
            bad = compare_npz(old, new) if new.exists() else ["missing"]
            rows.append((old.stem, "identical" if not bad else "; ".join(bad)))
            failed |= bool(bad)
        ref, query = load_pair(data, TASKS[0])
        for method in METHODS:
            old_dir, new_dir = recorded / "models" / method, tmp / "models" / method
            same_w = filecmp.cmp(old_dir / "model.safetensors", new_dir / "model.safetensors", shallow=False)
            meta_old = _strip(json.loads((old_dir / "pybridge.json").read_text()))
            meta_new = _strip(json.loads((new_dir / "pybridge.json").read_text()))
            rows.append((f"saved model {method}: weights", "identical" if same_w else "differs"))
            rows.append((f"saved model {method}: metadata", "identical" if meta_old == meta_new else "differs"))
            np.savez(tmp / "loaded.npz", **model_outputs(load_model(method, old_dir), query))
            bad = compare_npz(recorded / "outputs" / f"model__{method}.npz", tmp / "loaded.npz")
            rows.append((f"old model {method} loaded, predicts", "identical" if not bad else "; ".join(bad)))
            failed |= not same_w or meta_old != meta_new or bool(bad)
    print("| output | result |\n|---|---|")
    for name, res in rows:
        print(f"| {name} | {res} |")
    return int(failed)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["record", "compare"])
    p.add_argument("dir", type=Path)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(2)
    if a.action == "record":
        if a.dir.exists():
            shutil.rmtree(a.dir)
        collect(a.data, a.dir / "outputs", a.dir / "models")
        return 0
    return compare(a.data, a.dir)


if __name__ == "__main__":
    sys.exit(main())
