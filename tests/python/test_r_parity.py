"""RunJIND and RunItClust called through rpy2 (Python hosts R) give the labels of the Python API with the same seed."""
from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import pybridge

CASES = {
    # method: (R function, small config, R outputs to compare: (R expression, result attribute))
    "jind": ("RunJIND", dict(n_top_genes=300, n_epochs=5, gan_epochs=1, gan_min_steps=5, gan_stop="epochs",
                             align_selection="last"),
             [("as.character(out$predicted.jind)", "labels"), ("as.numeric(out$predicted.jind.score)", "confidence")]),
    "itclust": ("RunItClust", dict(layerwise_epochs=6, pretrain_epochs=12, source_epochs=12, maxiter=10),
                [("as.character(out$itclust.clusters)", "clusters"),
                 ("as.character(out$predicted.itclust)", "cell_types"),
                 ("as.numeric(out$itclust.clusters.score)", "confidence")]),
}


def _r_value(v):
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, str):
        return f'"{v}"'
    return repr(v)


@pytest.mark.r
@pytest.mark.parametrize("method", sorted(CASES))
def test_r_entry_point_matches_python(panc8_pair, method, r_session):
    import anndata2ri
    from rpy2.robjects.conversion import localconverter

    ro = r_session
    ref, q = panc8_pair
    fn, opts, outputs = CASES[method]
    for name, a in (("par_ref", ref), ("par_q", q)):
        slim = ad.AnnData(a.X.copy(), obs=a.obs[["cell_type"]].copy(), var=pd.DataFrame(index=a.var_names))
        with localconverter(anndata2ri.converter):
            ro.globalenv[name + "_sce"] = slim
    r_opts = ", ".join(f"{k} = {_r_value(v)}" for k, v in opts.items())
    ro.r(f"""
        suppressPackageStartupMessages({{library(pybridge); library(SeuratObject); library(SingleCellExperiment)}})
        to_seu <- function(sce) CreateSeuratObject(counts = as(assay(sce, "X"), "CsparseMatrix"),
                                                   meta.data = as.data.frame(colData(sce)))
        out <- suppressWarnings({fn}(to_seu(par_q_sce), to_seu(par_ref_sce), seed = 1, device = "cpu",
                                     verbose = FALSE, {r_opts}))
    """)
    compute = pybridge.api.get_method(method)[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = compute(q, ref, seed=1, device="cpu", verbose=False, **opts)
    for expr, attr in outputs:
        got = list(ro.r(expr))
        want = getattr(res, attr)
        if isinstance(got[0], str):
            assert got == [str(x) for x in want], f"{method}: {attr} differs between R and Python"
        else:
            np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), atol=1e-6)
