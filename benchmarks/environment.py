"""The machine and package versions a results page states, and whether other work shared the cores."""

from __future__ import annotations

import os
import platform
import subprocess
import sys


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) / 2**20
    except OSError:
        pass
    n = os.cpu_count()
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return {"cpu": cpu, "cores": n, "ram_gb": ram, "os": platform.platform()}


def _pyver(mod: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(mod)
    except PackageNotFoundError:
        return "not installed"


def versions() -> dict:
    v = {"python": platform.python_version()}
    for m in ("pybridge", "torch", "numpy", "scikit-learn", "scanpy", "anndata", "leidenalg", "celltypist"):
        v[m] = _pyver(m)
    from .peers import scvi_python

    py = scvi_python()
    v["scvi-tools"] = "not installed"
    if py:
        try:
            r = subprocess.run(
                [py, "-c", "from importlib.metadata import version as v; print(v('scvi-tools'), v('torch'))"],
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError):
            r = None
        if r is not None and r.returncode == 0:
            sv, tv = r.stdout.split()
            v["scvi-tools"] = f"{sv} (separate env, torch {tv})" if py != sys.executable else sv
    try:
        r = subprocess.run(
            [
                "Rscript",
                "-e",
                "cat(R.version$major, '.', R.version$minor, sep=''); cat(' ');"
                "for (p in c('Seurat','SingleR')) cat(tryCatch(as.character(packageVersion(p)),"
                "error=function(e) 'not-installed'), '')",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        parts = r.stdout.split()
        v["R"], v["Seurat"], v["SingleR"] = (parts + ["?"] * 3)[:3]
    except (OSError, subprocess.SubprocessError):
        v["R"] = v["Seurat"] = v["SingleR"] = "not installed"
    return v


def was_loaded(loads, cores) -> bool:
    """Whether 1-minute load averages taken during a run say other work shared the ``cores`` with it."""
    loads = [v for v in loads if v is not None]
    return bool(loads) and max(loads) > 1.25 * float(cores or os.cpu_count() or 1)
