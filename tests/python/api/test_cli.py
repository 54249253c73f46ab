"""The pybridge command line: annotate / train / predict, CSV output, one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pybridge.cli import main

FAST = ["--set", "n_epochs=8", "--set", "min_epochs=2", "--quiet"]


@pytest.fixture()
def files(panc8_pair, tmp_path):
    ref, q = panc8_pair
    ref.write_h5ad(tmp_path / "ref.h5ad")
    q.write_h5ad(tmp_path / "q.h5ad")
    return tmp_path


def test_annotate_writes_h5ad_and_csv(files, capsys):
    rc = main(
        [
            "annotate",
            "--reference",
            str(files / "ref.h5ad"),
            "--query",
            str(files / "q.h5ad"),
            "--out",
            str(files / "out.h5ad"),
            "--csv",
            str(files / "labels.csv"),
            *FAST,
        ]
    )
    assert rc == 0
    out = ad.read_h5ad(files / "out.h5ad")
    assert {"scnym", "scnym_confidence"} <= set(out.obs.columns)
    assert out.obsm["scnym_probabilities"].shape[0] == out.n_obs
    csv = pd.read_csv(files / "labels.csv", index_col=0)
    assert list(csv.index) == list(out.obs_names)
    np.testing.assert_array_equal(csv["label"].to_numpy(), out.obs["scnym"].astype(str).to_numpy())
    printed = capsys.readouterr().out
    assert "mean confidence" in printed


def test_train_then_predict_matches_in_process_model(files):
    model_dir = files / "model"
    assert (
        main(
            [
                "train",
                "--reference",
                str(files / "ref.h5ad"),
                "--query",
                str(files / "q.h5ad"),
                "--out",
                str(model_dir),
                "--seed",
                "4",
                *FAST,
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_dir),
                "--query",
                str(files / "q.h5ad"),
                "--csv",
                str(files / "p.csv"),
                "--quiet",
            ]
        )
        == 0
    )
    import pybridge

    ref, q = ad.read_h5ad(files / "ref.h5ad"), ad.read_h5ad(files / "q.h5ad")
    direct = pybridge.ScNym(seed=4, n_epochs=8, min_epochs=2, verbose=False).fit(ref, query=q).predict(q)
    csv = pd.read_csv(files / "p.csv", index_col=0)
    np.testing.assert_array_equal(csv["label"].to_numpy(), direct.labels.astype(str))


def test_train_passes_fit_options_such_as_domain_key(files):
    """`--set domain_key=batch` reaches ScNym.fit (it is not a config option): one domain per technology."""
    model_dir = files / "model_domains"
    assert (
        main(
            [
                "train",
                "--reference",
                str(files / "ref.h5ad"),
                "--query",
                str(files / "q.h5ad"),
                "--out",
                str(model_dir),
                "--set",
                "domain_key=batch",
                *FAST,
            ]
        )
        == 0
    )
    import pybridge

    model = pybridge.ScNym.load(model_dir)
    assert sorted(model.domains_) == ["celseq", "celseq2", "fluidigmc1", "indrop", "smartseq2"]
    # a column the reference lacks is a one-line error, exit status 2
    assert (
        main(
            [
                "train",
                "--reference",
                str(files / "ref.h5ad"),
                "--out",
                str(files / "m2"),
                "--set",
                "domain_key=protocol",
                *FAST,
            ]
        )
        == 2
    )


def test_jind_model_is_aligned_to_the_query_at_predict(files):
    """`pybridge predict` with a reference-only JIND model runs JIND's per-query alignment, as `annotate` does."""
    opts = [
        "--set",
        "n_top_genes=500",
        "--set",
        "n_epochs=6",
        "--set",
        "gan_epochs=2",
        "--set",
        "gan_min_steps=5",
        "--set",
        "gan_stop=epochs",
        "--set",
        "align_selection=last",
        "--quiet",
    ]
    model_dir = files / "jind_model"
    assert (
        main(["train", "--method", "jind", "--reference", str(files / "ref.h5ad"), "--out", str(model_dir), *opts]) == 0
    )
    assert (
        main(
            [
                "predict",
                "--model",
                str(model_dir),
                "--query",
                str(files / "q.h5ad"),
                "--out",
                str(files / "p.h5ad"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "annotate",
                "--method",
                "jind",
                "--reference",
                str(files / "ref.h5ad"),
                "--query",
                str(files / "q.h5ad"),
                "--out",
                str(files / "a.h5ad"),
                *opts,
            ]
        )
        == 0
    )
    predicted, annotated = ad.read_h5ad(files / "p.h5ad"), ad.read_h5ad(files / "a.h5ad")
    assert predicted.uns["jind"]["stage"] == "aligned"
    np.testing.assert_array_equal(predicted.obs["jind"].astype(str), annotated.obs["jind"].astype(str))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["annotate", "--reference", "missing.h5ad", "--query", "q.h5ad"], "does not exist"),
        (["annotate", "--reference", "ref.h5ad", "--query", "q.h5ad", "--labels-key", "nope"], "labels_key='nope'"),
        (
            ["annotate", "--reference", "ref.h5ad", "--query", "q.h5ad", "--set", "n_epoch=3"],
            "Unknown ScNymConfig option",
        ),
        (["predict", "--model", "ref.h5ad", "--query", "q.h5ad"], "not a pybridge model directory"),
        (["annotate", "--reference", "notes.txt", "--query", "q.h5ad"], "could not read reference"),
        (
            ["annotate", "--reference", "ref.h5ad", "--query", "q.h5ad", "--set", "n_epochs=ten"],
            "ScNymConfig option n_epochs must be an integer, not 'ten' (str)",
        ),
        (["annotate", "--reference", "ref.h5ad", "--query", "q.h5ad", "--out", "labels.csv"], "use --csv"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, argv, message):
    (files / "notes.txt").write_text("not an h5ad file")
    argv = [str(files / a) if a.endswith((".h5ad", ".txt")) else a for a in argv]
    proc = subprocess.run(
        [sys.executable, "-m", "pybridge", *argv, "--quiet"], capture_output=True, text=True, cwd=files
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pybridge: error:"), proc.stderr
    assert message in lines[0]
