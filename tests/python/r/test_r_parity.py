"""RunJIND, RunItClust and RunNMFTransfer called through rpy2 (Python hosts R) give the output of the Python API
with the same seed."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import pybridge

CASES = {
    # method: (R function, small config, R outputs to compare: (R expression, result attribute))
    "jind": (
        "RunJIND",
        dict(n_top_genes=300, n_epochs=5, gan_epochs=1, gan_min_steps=5, gan_stop="epochs", align_selection="last"),
        [("as.character(out$predicted.jind)", "labels"), ("as.numeric(out$predicted.jind.score)", "confidence")],
    ),
    "itclust": (
        "RunItClust",
        dict(layerwise_epochs=6, pretrain_epochs=12, source_epochs=12, maxiter=10),
        [
            ("as.character(out$itclust.clusters)", "clusters"),
            ("as.character(out$predicted.itclust)", "cell_types"),
            ("as.numeric(out$itclust.clusters.score)", "confidence"),
        ],
    ),
}


def _r_value(v):
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "c(" + ", ".join(_r_value(x) for x in v) + ")"
    return repr(v)


def _send_pair(ro, ref, q):
    import anndata2ri
    from rpy2.robjects.conversion import localconverter

    for name, a in (("par_ref", ref), ("par_q", q)):
        slim = ad.AnnData(a.X.copy(), obs=a.obs[["cell_type"]].copy(), var=pd.DataFrame(index=a.var_names))
        with localconverter(anndata2ri.converter):
            ro.globalenv[name + "_sce"] = slim


def _run_r(ro, call: str):
    ro.r(f"""
        suppressPackageStartupMessages({{library(pybridge); library(SeuratObject); library(SingleCellExperiment)}})
        to_seu <- function(sce) CreateSeuratObject(counts = as(assay(sce, "X"), "CsparseMatrix"),
                                                   meta.data = as.data.frame(colData(sce)))
        out <- suppressWarnings({call})
    """)


def _compare(ro, res, outputs, method):
    for expr, attr in outputs:
        got = list(ro.r(expr))
        want = getattr(res, attr)
        if isinstance(got[0], str):
            assert got == [str(x) for x in want], f"{method}: {attr} differs between R and Python"
        else:
            np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), atol=1e-6)


@pytest.mark.r
@pytest.mark.parametrize("method", sorted(CASES))
def test_r_entry_point_matches_python(panc8_pair, method, r_session):
    ro = r_session
    ref, q = panc8_pair
    fn, opts, outputs = CASES[method]
    _send_pair(ro, ref, q)
    r_opts = ", ".join(f"{k} = {_r_value(v)}" for k, v in opts.items())
    _run_r(ro, f'{fn}(to_seu(par_q_sce), to_seu(par_ref_sce), seed = 1, device = "cpu", verbose = FALSE, {r_opts})')
    compute = pybridge.api.get_method(method).compute
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = compute(q, ref, seed=1, device="cpu", verbose=False, **opts)
    _compare(ro, res, outputs, method)


@pytest.mark.r
def test_runnmftransfer_matches_python(panc8_pair, r_session):
    """RunNMFTransfer (a clustering method with a reference): same clusters, matched types, scores, embedding and
    selected theta as compute_nmf_transfer. The paper's defaults except a 4-point theta grid, sent as an R vector."""
    ro = r_session
    ref, q = panc8_pair
    thetas = (0.0, 0.3, 0.6, 0.9)
    _send_pair(ro, ref, q)
    _run_r(
        ro,
        f'RunNMFTransfer(to_seu(par_q_sce), to_seu(par_ref_sce), labels = "cell_type", n.clusters = 5, '
        f'seed = 1, device = "cpu", verbose = FALSE, thetas = {_r_value(thetas)})',
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pybridge.api.compute_nmf_transfer(
            q, reference=ref, n_clusters=5, labels_key="cell_type", seed=1, device="cpu", verbose=False, thetas=thetas
        )
    assert len(set(res.clusters)) == 5  # a non-trivial partition, so agreement is informative
    _compare(
        ro,
        res,
        [
            ("as.character(out$nmf_transfer.clusters)", "clusters"),
            ("as.character(out$predicted.nmf_transfer)", "cell_types"),
            ("as.numeric(out$nmf_transfer.clusters.score)", "confidence"),
        ],
        "nmf_transfer",
    )
    np.testing.assert_allclose(np.asarray(ro.r('Embeddings(out, "nmf_transfer")')), res.embedding, atol=1e-5)
    r_theta = ro.r('SeuratObject::Command(out, "RunNMFTransfer.nmf_transfer")$theta')[0]
    assert r_theta == res.params["theta"] in thetas
