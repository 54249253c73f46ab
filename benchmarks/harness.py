"""Run the benchmark: every (tool, task) in its own process, scored, written to ``results.csv``.

The tool table is :mod:`benchmarks.tools`; the page and plots are written by
:mod:`benchmarks.report` (``python -m benchmarks``, :mod:`benchmarks.cli`, runs
:func:`run_suite` and then the report; this module imports neither).

Per call the harness records the tool's own time (``seconds``: the call alone, as
measured inside the process), the process wall time (``wall_s``: file reading and R
start-up included) and the peak resident memory of the process (``peak_rss_mb``:
``wait4`` max RSS, and psutil samples of the process tree when psutil is installed).
By default each call is forked from a zygote (``zygote.py``) that has imported the
tool's packages once, so the ~4 s of Python start-up and imports per call is paid
once per tool and run; R tools are exec'd from an empty zygote (a child's max RSS
starts at its parent's RSS, so forking R from the harness would inflate it).
``--no-fork`` starts a fresh interpreter per call instead. A call that exceeds
``--timeout`` or ``--mem-limit-gb`` is killed and recorded as ``timeout`` /
``out of memory``; a tool that is not installed gets one ``not installed`` row per
table, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import select as _select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import tasks as T
from .metrics import annotation_scores, clustering_scores, reliability
from .tools import TOOLS, Tool, preload_for, tool_applies

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------- one subprocess
class Zygote:
    """One ``benchmarks.zygote`` process: imports a tool's packages once, then forks a worker per call."""

    def __init__(self, python: str, modules: tuple, env: dict, log: Path):
        self.log = open(log, "a")
        self.proc = subprocess.Popen(
            [python, "-m", "benchmarks.zygote", *modules],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self._buf = b""
        if self._line(block=True) is None:
            self.close()
            raise RuntimeError(f"zygote for {', '.join(modules)} did not start (see {log})")

    def _line(self, block: bool):
        """The zygote's next answer (a dict), None if there is none yet (``block=False``) or it has exited.

        Reads the pipe's file descriptor directly: a buffered reader could hold a finished call's answer
        while ``select`` on the descriptor says there is nothing to read."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            if not block and not _select.select([fd], [], [], 0)[0]:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def start(self, cmd: list, log: Path) -> int:
        """Fork the call: a Python worker's command runs in the child, any other command is exec'd."""
        worker = cmd[1:3] == ["-m", "benchmarks.worker"]
        req = {"argv": cmd[3:]} if worker else {"exec": cmd}
        self.proc.stdin.write((json.dumps({**req, "log": str(log)}) + "\n").encode())
        self.proc.stdin.flush()
        r = self._line(block=True)
        if r is None:
            raise RuntimeError("the benchmark zygote exited before starting the call")
        return r["pid"]

    def poll(self, block: bool = False):
        """``(exit code, max RSS in KB)`` of the running call, or None while it runs."""
        r = self._line(block)
        if r is None:
            if block or self.proc.poll() is not None:
                raise RuntimeError("the benchmark zygote died during a call")
            return None
        return r["rc"], r["maxrss_kb"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.log.close()


def _tree_rss_mb(pid: int) -> float:
    try:
        import psutil

        p = psutil.Process(pid)
        rss = p.memory_info().rss
        for c in p.children(recursive=True):
            try:
                rss += c.memory_info().rss
            except psutil.Error:
                pass
        return rss / 2**20
    except Exception:
        return 0.0


def call(
    cmd: list, *, env: dict, log: Path, timeout: float, mem_limit_mb: float | None, zygote: Zygote | None = None
) -> dict:
    """Run ``cmd`` (with a zygote: fork its worker there); return status, wall time, peak RSS (MB), return code."""
    t0 = time.perf_counter()
    fh = None
    if zygote is not None:
        pid = zygote.start(cmd, log)
        poll = zygote.poll
    else:
        fh = open(log, "w")
        pid = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True).pid

        def poll(block: bool = False):
            got, st, ru = os.wait4(pid, 0 if block else os.WNOHANG)
            return (os.waitstatus_to_exitcode(st), ru.ru_maxrss) if got == pid else None

    peak, status = 0.0, None
    try:
        while True:
            done = poll()
            if done is not None:
                break
            peak = max(peak, _tree_rss_mb(pid))
            elapsed = time.perf_counter() - t0
            if elapsed > timeout:
                status = f"timeout (> {timeout:.0f} s)"
            elif mem_limit_mb and peak > mem_limit_mb:
                status = f"out of memory (> {mem_limit_mb / 1024:.0f} GB)"
            if status:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                done = poll(block=True)
                break
            time.sleep(0.2 if elapsed < 10 else 0.5)
    except BaseException:
        if zygote is not None:  # the zygote broke (or we were interrupted): do not leave the call running
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        raise
    finally:
        if fh is not None:
            fh.close()
    rc, maxrss_kb = done
    wall = time.perf_counter() - t0
    peak = max(peak, maxrss_kb / 1024.0)
    if status is None:
        if rc == 0:
            status = "ok"
        elif rc in (-9, 137):
            status = "killed (likely out of memory)"
        else:
            status = "error"
    return {"status": status, "wall_s": wall, "peak_rss_mb": peak, "rc": rc}


def env_for(threads: int) -> dict:
    env = dict(os.environ)
    for k in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
    ):
        env[k] = str(threads)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONWARNINGS"] = "ignore"
    env.setdefault("MPLBACKEND", "Agg")
    return env


def command(tool: Tool, task_dir: Path, out_dir: Path, opts: dict, args, device: str) -> list:
    if tool.runner == "r":
        return [
            "Rscript",
            str(ROOT / "benchmarks" / "peers_r.R"),
            tool.name,
            str(task_dir),
            str(out_dir),
            str(args.seed),
        ]
    py = sys.executable
    if tool.runner == "scvi":
        from .peers import scvi_python

        py = scvi_python() or py
    return [
        py,
        "-m",
        "benchmarks.worker",
        tool.name,
        str(task_dir),
        str(out_dir),
        "--opts",
        json.dumps(opts),
        "--seed",
        str(args.seed),
        "--device",
        device,
        "--threads",
        str(args.threads),
    ]


_ZYGOTES: dict = {}


def zygote_for(tool: Tool, cmd: list, args) -> Zygote | None:
    """The running zygote for this tool's interpreter, modules and threads (started on first use), or None
    where calls run as fresh processes (``--no-fork``, or the zygote would not start). R tools get an empty
    zygote that only forks and execs ``Rscript``."""
    if not getattr(args, "fork", False) or not hasattr(os, "fork"):
        return None
    python = sys.executable if tool.runner == "r" else cmd[0]
    key = (python, preload_for(tool), args.threads)
    if key not in _ZYGOTES:
        try:
            _ZYGOTES[key] = Zygote(python, key[1], env_for(args.threads), args.out / "zygotes.log")
        except (OSError, RuntimeError) as err:
            print(f"[bench] {tool.name}: no zygote ({err}); fresh processes instead", flush=True)
            _ZYGOTES[key] = None
    return _ZYGOTES[key]


def retire_zygote(zygote: Zygote) -> None:
    """Stop a zygote that failed; later calls of its tools run as fresh processes."""
    for key, z in _ZYGOTES.items():
        if z is zygote:
            _ZYGOTES[key] = None
    try:
        zygote.proc.kill()
    except OSError:
        pass
    zygote.close()


def close_zygotes() -> None:
    for z in _ZYGOTES.values():
        if z is not None:
            z.close()
    _ZYGOTES.clear()


def error_text(run_dir: Path) -> str:
    for name in ("error.txt", "log.txt"):
        f = run_dir / name
        if f.exists():
            lines = [ln for ln in f.read_text(errors="replace").strip().splitlines() if ln.strip()]
            if lines:
                return (lines[0] if name == "error.txt" else lines[-1])[:300]
    return ""


def run_one(
    tool: Tool,
    prep: T.Prepared,
    args,
    *,
    device: str = "cpu",
    device_name: str = "CPU",
    extra_opts: dict | None = None,
    run_root: Path | None = None,
) -> tuple[dict, pd.DataFrame | None]:
    """Run and score one (tool, task); returns the CSV row and the reliability bins (or None)."""
    opts = dict(tool.quick if args.quick else tool.full)
    if tool.needs_k:
        opts["n_clusters"] = prep.n_types
    opts.update(extra_opts or {})
    run_dir = (run_root or args.out / "runs") / T.safe(prep.name) / (tool.name + ("" if device == "cpu" else "__gpu"))
    row = {
        "task": prep.name,
        "kind": prep.kind,
        "tool": tool.name,
        "tool_label": tool.display,
        "group": tool.group,
        "device": device_name,
        "n_ref": prep.n_ref,
        "n_query": prep.n_query,
        "n_genes": prep.n_genes,
        "true_k": prep.n_types,
        "opts": json.dumps(opts, sort_keys=True),
    }
    done = run_dir / "row.json"
    if args.resume and done.exists():
        old = json.loads(done.read_text())
        if old.get("opts") == row["opts"] and old.get("status") != "error":
            rel = run_dir / "reliability.csv"
            return old, (pd.read_csv(rel) if rel.exists() else None)
    run_dir.mkdir(parents=True, exist_ok=True)
    for f in ("pred.csv", "meta.json", "error.txt"):
        (run_dir / f).unlink(missing_ok=True)
    cmd = command(tool, prep.dir, run_dir, opts, args, device)
    kw = dict(
        env=env_for(args.threads), log=run_dir / "log.txt", timeout=args.timeout, mem_limit_mb=args.mem_limit_gb * 1024
    )
    zygote = zygote_for(tool, cmd, args)
    try:
        res = call(cmd, zygote=zygote, **kw)
    except (OSError, RuntimeError, ValueError) as err:  # the zygote itself broke: retire it, run this call fresh
        if zygote is None:
            raise
        print(f"[bench] zygote failed ({err}); {tool.name} on {prep.name} runs as a fresh process", flush=True)
        retire_zygote(zygote)
        res = call(cmd, **kw)
    row.update(res)
    rel = None
    if res["status"] == "ok" and not (run_dir / "pred.csv").exists():
        row["status"] = "error"
    if row["status"] == "ok":
        meta = json.loads((run_dir / "meta.json").read_text())
        row["seconds"] = meta.get("seconds")
        row["rss_before_mb"] = meta.get("rss_before_mb")
        row["notes"] = json.dumps(meta.get("notes", {}), default=str)
        if meta.get("device_name"):
            row["device"] = meta["device_name"]
            row["gpu_peak_mb"] = meta.get("gpu_peak_mb")
        pred = pd.read_csv(
            run_dir / "pred.csv",
            dtype={"label": str, "raw_label": str, "cluster": str},
            keep_default_na=False,
            na_values={"confidence": ["NA", ""], "score": ["NA", ""]},
        )
        if prep.kind == "transfer" and "raw_label" in pred:
            row.update(annotation_scores(pred, prep.truth, prep.ref_classes))
            seen = np.isin(prep.truth, prep.ref_classes)
            conf = pd.to_numeric(pred.get("confidence", pd.Series(np.nan, index=pred.index)), errors="coerce")
            if tool.annotation and np.isfinite(conf.to_numpy()).any():
                ok = pred["raw_label"].astype(str).to_numpy()[seen] == prep.truth[seen]
                rel = reliability(conf.to_numpy()[seen], ok)
                rel.insert(0, "tool", tool.name)
                rel.insert(0, "task", prep.name)
                rel.to_csv(run_dir / "reliability.csv", index=False)
        labels = pred["cluster"] if "cluster" in pred else pred["raw_label"]
        row.update(clustering_scores(labels.astype(str).to_numpy(), prep.truth))
    elif row["status"] == "error":
        row["error"] = error_text(run_dir)
    done.write_text(json.dumps(row, default=str))
    return row, rel


# ---------------------------------------------------------------- suite
def gpu_name() -> str | None:
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')",
        ],
        capture_output=True,
        text=True,
    )
    name = r.stdout.strip()
    return name or None


def select(names: str | None, default: list, known: list, what: str) -> list:
    if not names:
        return default
    out = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in out if n not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)}; known: {', '.join(known)}")
    return out


def run_suite(args) -> pd.DataFrame:
    from .peers import availability

    args.out.mkdir(parents=True, exist_ok=True)
    ann_tasks, clu_sets = T.TASK_SETS[args.task_set]
    if args.quick:
        ann_tasks, clu_sets = T.QUICK_ANNOTATION, T.QUICK_CLUSTERING
    task_names = select(args.tasks, ann_tasks + clu_sets, T.TRANSFER_TASKS + T.CLUSTERING_SETS, "task")
    default_tools = [n for n, t in TOOLS.items() if t.in_default_run]
    tools = [TOOLS[n] for n in select(args.tools, default_tools, list(TOOLS), "tool")]
    gpu = None if args.no_gpu else gpu_name()
    if args.gpu_only:
        if gpu is None:
            raise SystemExit("--gpu-only needs a CUDA GPU, and torch.cuda.is_available() is False here")
        tools = [t for t in tools if t.group == "pybridge"]  # only they have GPU rows
    rows, rels = [], []
    missing = {}
    for tool in tools:
        ok, why = availability(tool.name)
        if not ok:
            missing[tool.name] = why
            print(f"[bench] {tool.name}: {why}", flush=True)
    t_start = time.perf_counter()
    try:
        _run_tasks(args, task_names, tools, missing, gpu, rows, rels, t_start)
    finally:
        close_zygotes()
    return collect(args.out, rows, rels, merge=args.resume)


def _run_tasks(args, task_names, tools, missing, gpu, rows, rels, t_start) -> None:
    prep_root = args.out / "prepared"
    for name in task_names:
        kind = "transfer" if name in T.TRANSFER_TASKS else "clustering"
        prep = (
            T.prepare_transfer(name, args.data, prep_root)
            if kind == "transfer"
            else T.prepare_clustering(name, args.data, prep_root)
        )
        for tool in tools:
            if not tool_applies(tool, kind):
                continue
            if tool.name in missing:
                row = {
                    "task": name,
                    "kind": kind,
                    "tool": tool.name,
                    "tool_label": tool.display,
                    "group": tool.group,
                    "device": "",
                    "status": missing[tool.name],
                }
                d = args.out / "runs" / T.safe(name) / tool.name
                d.mkdir(parents=True, exist_ok=True)
                (d / "row.json").write_text(json.dumps(row))
                rows.append(row)
                continue
            devices = [("cpu", "CPU")] + ([("cuda", gpu)] if gpu and tool.group == "pybridge" else [])
            if args.gpu_only:
                devices = devices[1:]
            for dev, dev_name in devices:
                row, rel = run_one(tool, prep, args, device=dev, device_name=dev_name)
                rows.append(row)
                if rel is not None and dev == "cpu":
                    rels.append(rel)
                msg = " ".join(
                    f"{k}={row[k]:.3f}"
                    for k in ("acc", "macro_f1", "ari", "seconds", "peak_rss_mb")
                    if isinstance(row.get(k), float)
                )
                print(
                    f"[bench] {name:28s} {tool.name:22s} {dev:4s} {row['status']:10s} {msg} "
                    f"(elapsed {time.perf_counter() - t_start:.0f}s)",
                    flush=True,
                )
                pd.DataFrame(rows).to_csv(args.out / "results.csv", index=False)


def collect(out: Path, rows: list, rels: list, merge: bool) -> pd.DataFrame:
    """Write results.csv / reliability.csv: this run's rows, plus (``merge``) every other finished run in ``out``."""
    if merge:
        seen = {(r["task"], r["tool"], r.get("device", "")) for r in rows}
        for f in sorted((out / "runs").glob("*/*/row.json")):
            r = json.loads(f.read_text())
            if (r["task"], r["tool"], r.get("device", "")) not in seen:
                rows.append(r)
                rel = f.parent / "reliability.csv"
                if rel.exists() and r.get("device", "CPU") == "CPU":
                    rels.append(pd.read_csv(rel))
    df = pd.DataFrame(rows)
    order = {n: i for i, n in enumerate(T.TRANSFER_TASKS + T.CLUSTERING_SETS)}
    torder = {n: i for i, n in enumerate(TOOLS)}
    df = df.sort_values(
        by=["task", "tool"], key=lambda c: c.map(order if c.name == "task" else torder).fillna(999), kind="stable"
    ).reset_index(drop=True)
    df.to_csv(out / "results.csv", index=False)
    if rels:
        pd.concat(rels).to_csv(out / "reliability.csv", index=False)
    else:
        (out / "reliability.csv").unlink(missing_ok=True)
    return df


def parse_args(argv: list) -> argparse.Namespace:
    """The main run's options, with the output and data folders resolved."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="pybridge vs peers on the reference->query tasks and clustering sets. "
        "Subcommands: 'scale' (simulated timing run), 'report' (rewrite the page "
        "from an existing results.csv).",
    )
    p.add_argument("--quick", action="store_true", help="one small task and one clustering set, few epochs (smoke run)")
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with the .h5ad files (default ../shared/data)"
    )
    p.add_argument("--tools", default=None, help=f"comma-separated subset of: {', '.join(TOOLS)}")
    p.add_argument(
        "--task-set",
        choices=sorted(T.TASK_SETS),
        default="dev",
        help="'dev': the 9 reference -> query tasks and 7 clustering sets (default); 'validation': six "
        "held-out reference -> query tasks no setting was chosen on (write it to another --out)",
    )
    p.add_argument("--tasks", default=None, help="comma-separated task / clustering-set names")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for results.csv, runs/, plots/ and RESULTS.md "
        "(default benchmarks/out; --quick: benchmarks/out/quick)",
    )
    p.add_argument(
        "--results-md", type=Path, default=None, help="where to write the Markdown page (default <out>/RESULTS.md)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="threads per tool call (BLAS/OpenMP/torch)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds per tool call")
    p.add_argument("--mem-limit-gb", type=float, default=16, help="kill a call whose process tree exceeds this")
    p.add_argument("--resume", action="store_true", help="reuse finished (tool, task) runs found in <out>/runs")
    p.add_argument("--no-gpu", action="store_true", help="do not add GPU runs even when CUDA is available")
    p.add_argument(
        "--gpu-only",
        action="store_true",
        help="run only the pybridge methods' GPU rows (on a GPU machine; copy its runs/*/*__gpu folders "
        "into the CPU run's <out>/runs and rewrite the page with 'python -m benchmarks report')",
    )
    p.add_argument(
        "--no-fork",
        dest="fork",
        action="store_false",
        help="start every Python tool call as a fresh interpreter (default: fork it from a process that "
        "has already imported the tool's packages; saves about 4 s of start-up per call)",
    )
    args = p.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "benchmarks" / "out" / ("quick" if args.quick else "full")
    args.out = args.out.resolve()
    args.data = args.data.resolve()
    return args
