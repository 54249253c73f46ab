#' Transfer clustering with NMF (TransferCluster)
#'
#' Clusters the cells of `object` by NMF transfer from a reference (Mieth et
#' al. 2019): the reference's NMF dictionary is transferred to the target and
#' the cells are clustered with an SC3-style consensus. Without a reference it
#' clusters `object` alone. Uses the same machinery as [RunScNym()]. Written:
#' `<name>.clusters`, `<name>.clusters.score`, `predicted.<name>` (the matched
#' reference type, with reference labels), the embedding, the soft assignments
#' and the parameters (selected theta, cluster-to-type map). Objects with more
#' than 2000 cells are clustered as SC3 does for large data: SC3 on a random
#' subset of 2000 cells, a linear SVM for the others (`svm_max_cells = 2000`;
#' SC3's own default is 5000, but SC3 runs here once per theta;
#' `svm_max_cells = NULL` clusters every cell, with time growing about as the
#' cube and memory as the square of the number of cells).
#'
#' @inheritParams RunScNym
#' @param reference Optional labelled reference (Seurat, SCE, `.h5ad` or `.rds`).
#' @param labels The reference's label column; `NULL` clusters the reference by NMF instead.
#' @param n.clusters Number of clusters; `NULL` uses SC3's estimate.
#' @param ... NMF transfer options (see `pybridge.NMFTransferConfig` in Python).
#' @return `object` with the results added.
#' @seealso [RunItClust()], [RunCICL()]
#' @rdname RunNMFTransfer
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   query <- subset(seu, tech == "indrop")
#'   ref <- subset(seu, tech != "indrop")
#'   query <- RunNMFTransfer(query, ref, labels = "cell_type", n.clusters = 5)
#'   table(query$nmf_transfer.clusters, query$predicted.nmf_transfer)
#' }
#' }
#' @export
RunNMFTransfer.Seurat <- function(object, reference = NULL, labels = "cell_type", n.clusters = NULL, assay = NULL,
                                  name = "nmf_transfer", seed = 0, device = "auto", verbose = TRUE,
                                  reference.assay = NULL, layer = NULL, reference.layer = NULL, ...) {
  .run_clustering(object, method = "nmf_transfer", fn = "RunNMFTransfer", reference = reference,
                  n.clusters = n.clusters, labels = labels, assay = assay, reference.assay = reference.assay,
                  name = name, seed = seed, device = device, verbose = verbose, layer = layer,
                  reference.layer = reference.layer, options = list(...),
                  call = sys.call(), reserved = c("labels", "n.clusters", "assay", "name", "seed", "device", "verbose",
                                                  "reference.assay"))
}

#' @rdname RunNMFTransfer
#' @export
RunNMFTransfer.SingleCellExperiment <- RunNMFTransfer.Seurat
