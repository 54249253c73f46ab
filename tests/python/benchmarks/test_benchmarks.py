"""The benchmark suite's smoke run (``python -m benchmarks --quick``) writes a sane CSV, page and plots.

Runs a subset of tools on the quick task (panc8 celseq2 held out) and the quick
clustering set, in a temporary folder. scANVI is pointed at an interpreter that
does not exist, so the "not installed" path is exercised on every machine.
Nothing here checks speed or how good a tool is beyond "better than chance".
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# the repository root: the folder above this file that holds benchmarks/ (wherever under tests/ this file sits)
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "benchmarks" / "harness.py").exists())
DATA_DIR = Path(os.environ.get("PYBRIDGE_DATA", ROOT.parent / "shared" / "data"))
TOOLS = "pybridge_scnym,pybridge_cicl,logreg,seurat,pca_kmeans,scanvi"


@pytest.mark.slow
def test_quick_benchmark_run(tmp_path):
    if not (DATA_DIR / "panc8_small.h5ad").exists() or not (DATA_DIR / "cellbench_sc_celseq2_5cl_p2.h5ad").exists():
        pytest.skip(f"benchmark data not in {DATA_DIR}")
    out = tmp_path / "bench"
    env = dict(os.environ, PYBRIDGE_BENCH_SCVI_PYTHON=str(tmp_path / "no-such-python"), MPLBACKEND="Agg")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--data",
            str(DATA_DIR),
            "--out",
            str(out),
            "--tools",
            TOOLS,
            "--threads",
            "1",
            "--timeout",
            "600",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    df = pd.read_csv(out / "results.csv")
    assert set(df["task"]) == {"panc8:celseq2", "cellbench_sc_celseq2_5cl_p2"}
    scanvi = df[df["tool"] == "scanvi"]
    assert len(scanvi) == 1 and scanvi["status"].iloc[0].startswith("not installed")

    ann = df[(df["task"] == "panc8:celseq2") & (df["status"] == "ok")].set_index("tool")
    for tool in ("pybridge_scnym", "logreg"):
        assert tool in ann.index, df[["task", "tool", "status"]].to_string()
    seurat = df[df["tool"] == "seurat"]["status"].iloc[0]
    assert seurat == "ok" or seurat.startswith("not installed"), seurat
    # 6 query types: chance accuracy is ~0.2-0.4; a trained logistic regression is far above it
    assert ann.loc["logreg", "acc"] > 0.8
    for tool, r_ in ann.iterrows():
        if pd.notna(r_.get("acc")):
            assert 0.0 <= r_["acc"] <= 1.0 and 0.0 <= r_["macro_f1"] <= 1.0
            assert 0.0 <= r_["rej_seen"] <= 1.0
        assert r_["seconds"] > 0 and r_["wall_s"] >= r_["seconds"]
        assert 50 < r_["peak_rss_mb"] < 16 * 1024  # a Python/R process with data loaded, below the memory cap
    assert 0.0 <= ann.loc["logreg", "ece"] <= 1.0

    # PCA+KMeans needs scanpy, which is in the optional `bench` extra, not in the test environment CI builds:
    # either it ran, or it is recorded as not installed (never an error)
    kmeans = df[df["tool"] == "pca_kmeans"]["status"]
    assert len(kmeans) >= 1 and all(st == "ok" or st.startswith("not installed") for st in kmeans), kmeans
    clu = df[(df["task"] == "cellbench_sc_celseq2_5cl_p2") & (df["status"] == "ok")].set_index("tool")
    assert "pybridge_cicl" in clu.index
    assert (clu["k_found"] <= 5).all() and (clu["ari"].between(-0.5, 1.0)).all()
    if "pca_kmeans" in clu.index:
        assert clu.loc["pca_kmeans", "ari"] > 0.5  # five cell lines separate easily

    page = (out / "RESULTS.md").read_text()
    assert "Quick smoke run" in page and "## Per-task results" in page
    assert "no CUDA GPU" in page or "GPU:" in page
    assert "scanvi" in page and "not installed" in page
    for png in ("accuracy_per_task.png", "time_vs_accuracy.png", "reliability.png", "clustering_ari.png"):
        f = out / "plots" / png
        assert f.exists() and f.stat().st_size > 2000 and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_opt_in_peers_stay_out_of_the_default_run(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.peers import PY_PEERS
    from benchmarks.tools import TOOLS as ALL

    assert not ALL["scanvi_default"].in_default_run and ALL["scanvi"].in_default_run
    assert ALL["scanvi_default"].full == {"scvi_epochs": "default", "scanvi_epochs": "default"}
    assert PY_PEERS["scanvi_default"] is PY_PEERS["scanvi"]


def test_every_pybridge_tool_maps_to_a_registered_method(monkeypatch):
    """Each pybridge row of the tool table names a method of pybridge's registry, and a tool scored as an annotator
    names a method whose result has labels (an annotation method, or a clustering that maps and flags types)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import pybridge  # noqa: F401 (registers the methods)
    from benchmarks.tools import PYBRIDGE_METHODS
    from benchmarks.tools import TOOLS as ALL
    from pybridge.models._registry import get_method, methods

    assert {n for n, t in ALL.items() if t.group == "pybridge"} == set(PYBRIDGE_METHODS)
    assert set(PYBRIDGE_METHODS.values()) == set(methods())
    assert PYBRIDGE_METHODS["pybridge_scnym_top2000"] == "scnym"
    assert ALL["pybridge_scnym_top2000"].full == {"reject": True, "discovery": False, "n_top_genes": 2000}
    for name, method in PYBRIDGE_METHODS.items():
        info = get_method(method)
        labelled = info.kind == "annotation" or (info.maps_types and "raw_cell_types" in info.extra_fields)
        assert ALL[name].annotation == labelled, name
        assert (ALL[name].clusters == "sets") == (info.reference == "none"), name


def test_worker_writes_each_kind_of_result_with_its_columns(monkeypatch):
    """One generic worker path for every pybridge method: the columns of pred.csv follow the registry record
    (annotation; clustering with flagged mapped types, i.e. ItClust; clustering with or without mapped types)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import dataclasses

    import pybridge  # noqa: F401
    from benchmarks import worker
    from pybridge.models._registry import get_method
    from pybridge.models.itclust._model import ItClustResult
    from pybridge.result import AnnotationResult, ClusteringResult

    n, obs = 4, pd.Index(list("wxyz"))
    lab = np.array(["a", "b", "Unassigned", "a"], dtype=object)
    raw = np.array(["a", "b", "b", "a"], dtype=object)
    clusters = np.array([0, 1, 2, 0])
    results = {
        "scnym": AnnotationResult(
            obs,
            ["a", "b"],
            np.full((n, 2), 0.5),
            lab,
            raw,
            np.linspace(0.1, 0.9, n),
            rejection=True,
            params={"training": {"epochs_trained": 5, "best_epoch": 3}},
        ),
        "itclust": ItClustResult(
            obs, clusters, np.full(n, 0.7), cell_types=lab, cell_score=np.full(n, 0.4), raw_cell_types=raw
        ),
        "nmf_transfer": ClusteringResult(obs, clusters, np.ones(n), cell_types=raw, params={"theta": 0.5}),
        "cicl": ClusteringResult(obs, clusters, np.ones(n), params={"training": {"epochs_trained": 2}}),
    }
    calls = []

    def record(method):
        def compute(query, reference=None, **kw):
            calls.append((method, reference, kw.get("labels_key")))
            return results[method]

        return compute

    monkeypatch.setattr(
        worker, "_method", lambda name, threads: dataclasses.replace(get_method(name), compute=record(name))
    )
    got = {m: worker.run_pybridge(m, None if m == "cicl" else "REF", "QUERY", {}, 0, "cpu", 1) for m in results}
    assert calls == [
        ("scnym", "REF", "cell_type"),
        ("itclust", "REF", "cell_type"),
        ("nmf_transfer", "REF", "cell_type"),
        ("cicl", None, None),
    ]
    cols = {m: list(out.columns) for m, (out, _, _) in got.items()}
    assert cols == {
        "scnym": ["label", "raw_label", "confidence", "rejected", "score"],
        "itclust": ["label", "raw_label", "confidence", "score", "rejected", "cluster"],
        "nmf_transfer": ["cluster", "raw_label"],
        "cicl": ["cluster"],
    }
    assert got["scnym"][2] == {"rejection": True, "epochs_trained": 5, "best_epoch": 3}
    assert list(got["scnym"][0]["rejected"]) == [0, 0, 1, 0]
    itc = got["itclust"][0]
    assert list(itc["rejected"]) == [0, 0, 1, 0] and list(itc["raw_label"]) == list(raw)
    assert (itc["confidence"] == 0.4).all() and list(itc["cluster"]) == ["0", "1", "2", "0"]
    assert got["itclust"][2] == {"n_clusters": 3} and got["cicl"][2] == {"n_clusters": 3}
    assert got["nmf_transfer"][2] == {"n_clusters": 3, "theta": 0.5}


def test_benchmark_modules_import_without_a_cycle():
    """tools / formatting / environment are leaves; the harness imports neither the report nor the scale run, and
    the report does not import the harness (only its ``main`` does, to collect a run's rows)."""
    code = "import sys; import benchmarks.{mod}; print(sorted(m for m in sys.modules if m.startswith('benchmarks.')))"
    loaded = {}
    for mod in ("tools", "formatting", "harness", "report", "worker"):
        r = subprocess.run(
            [sys.executable, "-c", code.format(mod=mod)], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        loaded[mod] = set(ast.literal_eval(r.stdout.strip().splitlines()[-1]))
    assert loaded["tools"] == {"benchmarks.tools"} and loaded["formatting"] == {"benchmarks.formatting"}
    assert not {"benchmarks.report", "benchmarks.scale", "benchmarks.cli"} & loaded["harness"]
    assert not {"benchmarks.harness", "benchmarks.scale", "benchmarks.cli"} & loaded["report"]
    assert loaded["worker"] == {"benchmarks.worker", "benchmarks.tools"}  # light: it also runs without pybridge
    for f in (ROOT / "benchmarks").glob("*.py"):
        assert "sys.path" not in f.read_text(), f"{f.name} edits sys.path; run it as python -m benchmarks.{f.stem}"


def test_zygote_runs_calls_reports_exit_codes_and_survives_a_timeout(tmp_path, monkeypatch):
    """The harness forks calls from a zygote: exit codes, logs, a killed call and the next call all come back."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.harness import Zygote, call, env_for

    z = Zygote(sys.executable, (), env_for(1), tmp_path / "zygote.log")
    try:
        kw = dict(env=env_for(1), timeout=60, mem_limit_mb=None, zygote=z)
        r = call(
            [sys.executable, "-c", "import sys; print('hello from R, say'); sys.exit(3)"], log=tmp_path / "a.txt", **kw
        )
        assert (r["status"], r["rc"]) == ("error", 3)
        assert "hello from R, say" in (tmp_path / "a.txt").read_text()
        assert 0 < r["peak_rss_mb"] < 1024

        r = call([sys.executable, "-c", "import time; time.sleep(60)"], log=tmp_path / "b.txt", **{**kw, "timeout": 1})
        assert r["status"].startswith("timeout") and r["rc"] == -9 and r["wall_s"] < 30

        # a worker call (run in the forked child, not exec'd): a missing task is an error with its reason on file
        out = tmp_path / "run"
        r = call(
            [sys.executable, "-m", "benchmarks.worker", "logreg", str(tmp_path / "no_task"), str(out)],
            log=tmp_path / "c.txt",
            **kw,
        )
        assert (r["status"], r["rc"]) == ("error", 1)
        assert "no_task/task.json" in (out / "error.txt").read_text()

        # calls that end at once: each answer is read as soon as it is written, never left in a buffer
        for i in range(20):
            r = call(["true"], log=tmp_path / f"d{i}.txt", **{**kw, "timeout": 20})
            assert (r["status"], r["rc"]) == ("ok", 0) and r["wall_s"] < 10, r
    finally:
        z.close()
    assert z.proc.returncode == 0


def test_report_adds_a_gpu_column_when_a_pybridge_method_ran_on_cuda(tmp_path, monkeypatch):
    """No GPU has been lent to this project yet, so the page's GPU column is checked on a results table with
    one CUDA row written by hand (the harness labels such rows with the device name); the CPU means must not
    count it."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.report import write_report

    base = dict(
        kind="transfer",
        n_ref=400,
        n_query=100,
        n_genes=2000,
        true_k=5,
        status="ok",
        wall_s=9.0,
        peak_rss_mb=500.0,
        rej_seen=0.0,
        ece=0.05,
        ari=0.8,
        nmi=0.8,
        k_found=5,
        error="",
        notes="{}",
    )
    rows = [
        dict(
            base,
            task="panc8:celseq2",
            tool="pybridge_scnym",
            device="CPU",
            acc=0.95,
            macro_f1=0.94,
            acc_kept=0.95,
            seconds=8.0,
        ),
        dict(
            base,
            task="panc8:celseq2",
            tool="pybridge_scnym",
            device="NVIDIA Test GPU",
            acc=0.50,
            macro_f1=0.50,
            acc_kept=0.50,
            seconds=1.5,
        ),
        dict(
            base, task="panc8:celseq2", tool="logreg", device="CPU", acc=0.98, macro_f1=0.97, acc_kept=0.98, seconds=0.1
        ),
    ]
    out = tmp_path / "bench"
    out.mkdir()
    md = out / "RESULTS.md"
    write_report(pd.DataFrame(rows), out, md, {"started": "today", "threads": 2})
    page = md.read_text()
    assert "- GPU: NVIDIA Test GPU" in page and "no CUDA GPU" not in page
    per_task = page[page.index("### panc8:celseq2") :]
    header = next(line for line in per_task.splitlines() if line.startswith("| tool |"))
    assert "| GPU s |" in header
    scnym = next(line for line in per_task.splitlines() if line.startswith("| pybridge scNym |"))
    cells = [c.strip() for c in scnym.strip("|").split("|")]
    assert cells[header.strip("|").split("|").index(" GPU s ")] == "1.5"
    headline = page[page.index("## Headline: annotation") : page.index("## Per-task results")]
    assert "| pybridge scNym | 1 | 0.950 |" in headline  # the CUDA row's 0.50 is not averaged in


def test_validation_task_set_loads_and_its_page_stands_apart(tmp_path, monkeypatch):
    """``--task-set validation``: six held-out pairs that load like the dev tasks; their page keeps its own
    plots folder (the dev page's plots stay), names itself, and counts only its own tasks as missing."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import tasks as T
    from benchmarks.report import write_report

    assert set(T.VALIDATION_TASKS).isdisjoint(T.ANNOTATION_TASKS) and len(T.VALIDATION_TASKS) == 6
    assert T.TASK_SETS["validation"] == (T.VALIDATION_TASKS, [])
    if (DATA_DIR / "cellbench_sc_dropseq.h5ad").exists():
        ref, query = T.load_pair(DATA_DIR, "cellbench_dropseq->celseq2")
        assert ref.n_obs == 225 and query.n_obs == 274  # the dev task's reference and query, swapped
    with pytest.raises(ValueError, match="Unknown task"):
        T.load_pair(DATA_DIR, "baron_mouse3->1")

    base = dict(
        kind="transfer",
        n_ref=1064,
        n_query=822,
        n_genes=14878,
        true_k=13,
        status="ok",
        wall_s=2.0,
        peak_rss_mb=300.0,
        rej_seen=0.0,
        ece=0.05,
        ari=0.8,
        nmi=0.8,
        k_found=13,
        error="",
        notes="{}",
        device="CPU",
        acc=0.96,
        macro_f1=0.9,
        acc_kept=0.96,
        seconds=1.0,
    )
    rows = [
        dict(base, task="baron_mouse2->1", tool="logreg"),
        dict(base, task="baron_mouse2->1", tool="pybridge_scnym", acc=0.97),
    ]
    out = tmp_path / "bench"
    out.mkdir()
    md = out / "VALIDATION.md"
    write_report(pd.DataFrame(rows), out, md, {"started": "today", "threads": 2, "task_set": "validation"})
    page = md.read_text()
    assert page.startswith("# pybridge benchmark: pybridge vs peer tools (validation tasks)")
    assert "](plots_validation/accuracy_per_task.png)" in page and not (out / "plots").exists()
    assert (out / "plots_validation" / "accuracy_per_task.png").exists()
    missing = page[page.index("## Not run or failed") :]
    assert "zheng_test->train" in missing and "panc8" not in missing and "dcc_" not in missing
    assert "## R-call overhead" not in page


def test_gpu_only_runs_just_the_pybridge_methods_on_cuda(tmp_path, monkeypatch):
    """``--gpu-only`` (for the one call on a lent GPU machine): no CPU rows, no peers, and a clear stop
    where there is no GPU. The tool calls themselves are replaced: this checks which calls are made."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import harness as H
    from benchmarks import tasks as T

    calls = []

    def fake_run_one(tool, prep, args, *, device="cpu", device_name="CPU", **kw):
        calls.append((tool.name, device, device_name))
        return {"task": prep.name, "kind": prep.kind, "tool": tool.name, "device": device_name, "status": "ok"}, None

    def fake_prepare(name, data, root):
        return T.Prepared(
            name=name,
            kind="transfer",
            dir=tmp_path,
            n_ref=1,
            n_query=1,
            n_genes=1,
            n_types=2,
            truth=np.array(["a", "b"]),
            ref_classes=["a", "b"],
        )

    monkeypatch.setattr(H, "run_one", fake_run_one)
    monkeypatch.setattr(T, "prepare_transfer", fake_prepare)
    args = H.parse_args(
        [
            "--tasks",
            "panc8:celseq2",
            "--tools",
            "pybridge_scnym,pybridge_jind,logreg",
            "--out",
            str(tmp_path / "o"),
            "--gpu-only",
        ]
    )
    monkeypatch.setattr(H, "gpu_name", lambda: None)
    with pytest.raises(SystemExit, match="--gpu-only needs a CUDA GPU"):
        H.run_suite(args)
    assert calls == []
    monkeypatch.setattr(H, "gpu_name", lambda: "NVIDIA Test GPU")
    df = H.run_suite(args)
    assert calls == [("pybridge_scnym", "cuda", "NVIDIA Test GPU"), ("pybridge_jind", "cuda", "NVIDIA Test GPU")]
    assert list(df["device"]) == ["NVIDIA Test GPU"] * 2


def test_device_check_dry_run_on_the_cpu(tmp_path, monkeypatch):
    """``benchmarks.device_check`` (the GPU call's first phase) runs end to end with ``--device cpu``: a table
    row per method asked for, the fitted model's tensors counted, the saved model reloaded with the same labels."""
    if not (DATA_DIR / "panc8_small.h5ad").exists():
        pytest.skip(f"benchmark data not in {DATA_DIR}")
    monkeypatch.syspath_prepend(str(ROOT))
    import torch

    from benchmarks import device_check

    out = tmp_path / "check.md"
    assert (
        device_check.main(
            ["--device", "cpu", "--data", str(DATA_DIR), "--methods", "nmf_transfer,itclust", "--out", str(out)]
        )
        == 0
    )
    rows = [
        line
        for line in out.read_text().splitlines()
        if line.startswith("| nmf_transfer") or line.startswith("| itclust")
    ]
    assert len(rows) == 2 and all("| ok | cpu " in r for r in rows), rows
    assert all(r.split("|")[7].strip() == "1.000" for r in rows)  # reloaded model: same labels
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="torch.cuda.is_available"):
            device_check.main(["--device", "cuda", "--data", str(DATA_DIR)])
