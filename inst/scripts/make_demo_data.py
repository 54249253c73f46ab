"""Build inst/extdata/panc8_small.rds (a Seurat v4 object) from ../shared/data/panc8_small.h5ad.

panc8_small: 500 human pancreas cells, 100 from each of five technologies
(Baron inDrop, Grün CEL-seq, Muraro CEL-seq2, Lawlor Fluidigm C1, Segerstolpe
Smart-seq2), 2000 genes, labels in `cell_type`, technology in `tech`/`batch`.
Source: the CRAN package bbknnR (data/panc8_small.rda), itself a subset of
SeuratData's panc8. Counts of three technologies are non-integer, as in panc8.

Run from the repository root:  .venv/bin/python inst/scripts/make_demo_data.py
"""
from pathlib import Path

import anndata as ad
import anndata2ri
import rpy2.robjects as ro
from rpy2.robjects.conversion import localconverter

root = Path(__file__).resolve().parents[2]
src = root.parent / "shared" / "data" / "panc8_small.h5ad"
out = root / "inst" / "extdata" / "panc8_small.rds"

adata = ad.read_h5ad(src)
adata.obs = adata.obs[["tech", "celltype", "cell_type", "batch"]].copy()
adata.uns = {}
with localconverter(anndata2ri.converter):
    ro.globalenv["sce"] = adata
ro.r(f"""
suppressPackageStartupMessages(library(SeuratObject))
counts <- as(SummarizedExperiment::assay(sce, "X"), "CsparseMatrix")
meta <- as.data.frame(SummarizedExperiment::colData(sce))
seu <- CreateSeuratObject(counts = counts, meta.data = meta, project = "panc8_small")
saveRDS(seu, "{out}", compress = "xz")
""")
print(out, out.stat().st_size, "bytes")
