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
byte for byte, metadata apart from timings and the package version; where the
new metadata only adds keys, e.g. for a new option, that is reported as such).
Its outputs stay in ``DIR/run``. ``--options`` sets method options for the run,
e.g. a new option switched off: ``--options '{"scnym": {"calibrate": false}}'``.
Exit status 1 when anything differs.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import sys
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


#: method options for a run (``--options``): e.g. a new option switched off to reproduce the recorded outputs
OPTIONS: dict[str, dict] = {}


def run_method(method: str, ref, query):
    """The query annotated by ``method`` (a copy), through the public functional API."""
    fn, kw = _fn(method), dict(seed=0, device="cpu", verbose=False, copy=True, **OPTIONS.get(method, {}))
    q = query.copy()
    if method == "cicl":
        return fn(q, **kw)
    if method == "nmf_transfer":
        return fn(q, reference=ref, labels_key="cell_type", **kw)
    return fn(q, ref, labels_key="cell_type", **kw)


def outputs(adata, key: str) -> dict[str, np.ndarray]:
    """Every obs column and obsm matrix named after ``key``, as arrays."""
    out = {}
    for col in adata.obs.columns:
        if col == key or col.startswith(key + "_") or col.startswith(key + "."):
            out[f"obs/{col}"] = _plain(
                adata.obs[col].astype(str) if adata.obs[col].dtype.name == "category" else adata.obs[col]
            )
    for name in adata.obsm:
        if key in name:
            out[f"obsm/{name}"] = _plain(adata.obsm[name])
    return out


def _estimator(method: str):
    """The estimator class (by name, so that this script also runs on trees from before the registry)."""
    import pybridge

    names = {"scnym": "ScNym", "jind": "JIND", "itclust": "ItClust", "cicl": "CICL", "nmf_transfer": "NMFTransfer"}
    return getattr(pybridge, names[method])


def _plain(values) -> np.ndarray:
    """An array numpy stores without pickling: text as a unicode array."""
    a = np.asarray(values)
    return a.astype(str) if a.dtype == object else a


def fit_model(method: str, ref, query):
    est = _estimator(method)(seed=0, device="cpu", verbose=False, **OPTIONS.get(method, {}))
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


def _same_meta(old: dict, new: dict) -> str:
    """``identical``, ``old keys identical`` (the new file only adds keys, e.g. a new option), or ``differs``."""
    old, new = _strip(old), _strip(new)
    if old == new:
        return "identical"

    def restrict(n, o):
        if isinstance(n, dict) and isinstance(o, dict):
            return {k: restrict(n[k], o[k]) for k in o if k in n}
        return n

    if all(k in new for k in old) and restrict(new, old) == old:
        return f"old keys identical (new keys: {', '.join(sorted(_added(old, new)))})"
    return "differs"


def _added(old, new, prefix=""):
    for k, v in new.items():
        if k not in old:
            yield prefix + k
        elif isinstance(v, dict) and isinstance(old[k], dict):
            yield from _added(old[k], v, prefix + k + ".")


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
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "OU" or b.dtype.kind in "OU":  # text: compared as text
        return bool(np.array_equal(a.astype(str), b.astype(str)))
    if a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def compare_npz(old: Path, new: Path) -> list[str]:
    # allow_pickle: only this script's own files are read (records made before text was stored as unicode)
    a, b = np.load(old, allow_pickle=True), np.load(new, allow_pickle=True)
    bad = [f"{k}: only in {'old' if k in a.files else 'new'}" for k in sorted(set(a.files) ^ set(b.files))]
    bad += [f"{k}: differs" for k in sorted(set(a.files) & set(b.files)) if not _same(a[k], b[k])]
    return bad


def compare(data: Path, recorded: Path) -> int:
    """Run with the working tree's code into ``recorded/run`` and compare; print a table, 1 when anything differs."""
    run = recorded / "run"
    if run.exists():
        shutil.rmtree(run)
    collect(data, run / "outputs", run / "models")
    rows, failed = [], False
    for old in sorted((recorded / "outputs").glob("*.npz")):
        new = run / "outputs" / old.name
        bad = compare_npz(old, new) if new.exists() else ["missing"]
        rows.append((old.stem, "identical" if not bad else "; ".join(bad)))
        failed |= bool(bad)
    ref, query = load_pair(data, TASKS[0])
    for method in METHODS:
        old_dir, new_dir = recorded / "models" / method, run / "models" / method
        same_w = filecmp.cmp(old_dir / "model.safetensors", new_dir / "model.safetensors", shallow=False)
        meta = _same_meta(*(json.loads((d / "pybridge.json").read_text()) for d in (old_dir, new_dir)))
        rows.append((f"saved model {method}: weights", "identical" if same_w else "differs"))
        rows.append((f"saved model {method}: metadata", meta))
        np.savez(run / "loaded.npz", **model_outputs(load_model(method, old_dir), query))
        bad = compare_npz(recorded / "outputs" / f"model__{method}.npz", run / "loaded.npz")
        rows.append((f"old model {method} loaded, predicts", "identical" if not bad else "; ".join(bad)))
        failed |= not same_w or meta == "differs" or bool(bad)
    print("| output | result |\n|---|---|")
    for name, res in rows:
        print(f"| {name} | {res} |")
    return int(failed)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=["record", "compare"])
    p.add_argument("dir", type=Path)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--options", default="{}", help='JSON: method -> options, e.g. {"scnym": {"calibrate": false}}')
    a = p.parse_args(argv)
    OPTIONS.update(json.loads(a.options))
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
