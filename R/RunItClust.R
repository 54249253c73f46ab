#' Transfer clustering with ItClust
#'
#' Clusters the cells of `object` with ItClust (Hu et al.): an autoencoder and
#' clustering layer pretrained on the labelled reference, refined on the query,
#' each cluster named after its reference type (or `"Unassigned"` when flagged
#' as a possible new type). Uses the same machinery as [RunScNym()].
#'
#' Written: `<name>.clusters` (factor), `<name>.clusters.score` (the cluster's
#' confidence), `predicted.<name>` (the cluster's reference type),
#' `predicted.<name>.raw` (the type before flagging), `<name>.cell.score` (the
#' cell's soft assignment to its cluster), the embedding, the soft assignments
#' (Seurat assay `cluster.score.<name>`, SCE `metadata()`) and the parameters
#' with the cluster-to-type map.
#'
#' @inheritParams RunScNym
#' @param ... ItClust options (see `pybridge.ItClustConfig` in Python).
#' @return `object` with the results added.
#' @seealso [RunNMFTransfer()], [RunScNym()]
#' @rdname RunItClust
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   query <- subset(seu, tech == "indrop")
#'   ref <- subset(seu, tech != "indrop")
#'   query <- RunItClust(query, ref, labels = "cell_type")
#'   table(query$itclust.clusters, query$predicted.itclust)
#' }
#' }
#' @export
RunItClust.Seurat <- function(object, reference, labels = "cell_type", assay = NULL, name = "itclust", seed = 0,
                              device = "auto", verbose = TRUE, reference.assay = NULL, layer = NULL,
                              reference.layer = NULL, ...) {
  .run_annotation(object, reference, method = "itclust", fn = "RunItClust", labels = labels, assay = assay,
                  reference.assay = reference.assay, name = name, seed = seed, device = device, verbose = verbose,
                  layer = layer, reference.layer = reference.layer, options = list(...), call = sys.call(),
                  reserved = c("labels", "assay", "name", "seed", "device", "verbose", "reference.assay"))
}

#' @rdname RunItClust
#' @export
RunItClust.SingleCellExperiment <- RunItClust.Seurat
