#' Cluster cells with CICL
#'
#' Clusters the cells of `object` with CICL (Jiang et al.; cluster-aware
#' iterative contrastive learning), without a reference. Uses the same
#' machinery as [RunScNym()]. Written: `<name>.clusters` (factor; "0" is the
#' largest cluster), `<name>.clusters.score` (the cell's soft assignment to its
#' cluster), the embedding (reduction `<name>` / `reducedDim(x, toupper(name))`),
#' the soft assignments (Seurat assay `cluster.score.<name>`, SCE `metadata()`)
#' and the parameters.
#'
#' @inheritParams RunScNym
#' @param n.clusters Number of clusters; `NULL` estimates it.
#' @param ... CICL options (see `pybridge.CICLConfig` in Python), e.g. `n_epochs = 100`.
#' @return `object` with the results added.
#' @seealso [RunNMFTransfer()], [RunItClust()]
#' @rdname RunCICL
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   seu <- RunCICL(seu, n.clusters = 5, n_epochs = 10)
#'   table(seu$cicl.clusters, seu$cell_type)
#' }
#' }
#' @export
RunCICL.Seurat <- function(object, n.clusters = NULL, assay = NULL, name = "cicl", seed = 0, device = "auto",
                           verbose = TRUE, layer = NULL, ...) {
  .run_clustering(object, method = "cicl", fn = "RunCICL", n.clusters = n.clusters, assay = assay, name = name,
                  seed = seed, device = device, verbose = verbose, layer = layer, options = list(...),
                  call = sys.call(),
                  send_labels = FALSE, reserved = c("n.clusters", "assay", "name", "seed", "device", "verbose"))
}

#' @rdname RunCICL
#' @export
RunCICL.SingleCellExperiment <- RunCICL.Seurat
