"""The Python tutorial (examples/tutorial.py) runs headless end to end, with few epochs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[3]


def test_tutorial_runs(tmp_path, data_dir):
    out = tmp_path / "tutorial"
    env = dict(os.environ, PYBRIDGE_PYTHON=sys.executable)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "tutorial.py"),
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--epochs",
            "3",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    for heading in (
        "=== data",
        "=== scNym and JIND",
        "=== train once",
        "=== the same from the command line",
        "=== a Seurat object",
    ):
        assert heading in text
    # the printed comparison has both methods and the unseen-type column
    assert "B cells rejected" in text and "\nscnym" in text and "\njind" in text
    # model files are safetensors + JSON, and the CLI wrote its CSVs with one row per query cell
    files = {f.name for f in (out / "zheng_scnym_model").iterdir()}
    assert any(f.endswith(".safetensors") for f in files) and any(f.endswith(".json") for f in files)
    for name in ("query_jind.csv", "query_scnym.csv", "query_cicl.csv"):
        assert len(pd.read_csv(out / name, index_col=0)) == 1500, name
    # the bad-input example exits 2 with one line naming the missing column
    assert "-> exit 2: pybridge: error:" in text and "celltype" in text
    # the .rds round trip: either done (class Seurat, the new column present) or skipped with a reason
    if "skipped" not in text.split("=== a Seurat object")[1]:
        assert (out / "indrop_annotated.rds").exists()
        assert "class: Seurat" in text and "predicted.scnym" in text
