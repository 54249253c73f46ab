#' Annotate cells with JIND
#'
#' Transfers labels from a labelled reference with JIND (Goyal et al.): a
#' classifier with per-class rejection thresholds and an adversarial alignment
#' of the query to the reference. A thin wrapper on the same machinery as
#' [RunScNym()]; see there for the inputs, the backends and what is written
#' (`predicted.<name>`, `predicted.<name>.score`, `predicted.<name>.raw`, the
#' embedding, per-class probabilities and the parameters). Rejected cells are
#' `"Unassigned"`.
#'
#' @inheritParams RunScNym
#' @param reference The labelled reference: a Seurat object, a
#'   SingleCellExperiment, the path of an `.h5ad` or `.rds` file, or a JIND
#'   model saved by [TrainJIND()] (its return value or its directory). A saved
#'   model is not retrained: its classifier is aligned to `object` (the GAN
#'   step, as JIND does for every new target batch; no reference data needed)
#'   and then predicts. Pass `align = FALSE` to use the classifier alone.
#' @param ... JIND options (see `pybridge.JINDConfig` in Python), e.g.
#'   `jind_plus = TRUE`, `align = FALSE`, `outlier_fraction = 0.1`.
#' @return `object` with the results added.
#' @seealso [TrainJIND()], [RunScNym()]
#' @rdname RunJIND
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   query <- subset(seu, tech == "indrop")
#'   ref <- subset(seu, tech != "indrop")
#'   query <- RunJIND(query, ref, labels = "cell_type", n_epochs = 10, gan_epochs = 2)
#'   table(query$predicted.jind, query$cell_type)
#' }
#' }
#' @export
RunJIND.Seurat <- function(object, reference, labels = "cell_type", assay = NULL, name = "jind", seed = 0,
                           device = "auto", verbose = TRUE, reference.assay = NULL, layer = NULL,
                           reference.layer = NULL, ...) {
  .run_annotation(object, reference, method = "jind", fn = "RunJIND", labels = labels, assay = assay,
                  reference.assay = reference.assay, name = name, seed = seed, device = device, verbose = verbose,
                  layer = layer, reference.layer = reference.layer, options = list(...), call = sys.call(),
                  reserved = c("labels", "assay", "name", "seed", "device", "verbose", "reference.assay"))
}

#' @rdname RunJIND
#' @export
RunJIND.SingleCellExperiment <- RunJIND.Seurat

#' Train a JIND model once and save it
#'
#' Trains JIND's classifier (and its per-class rejection thresholds) on a
#' labelled reference and saves it (weights in safetensors, metadata in JSON)
#' to the directory `path`. Pass the result, or the directory, as `reference`
#' to [RunJIND()]: each query is then aligned to the saved classifier and
#' annotated without the reference data. For a query with all the reference's
#' genes this gives the labels of `RunJIND(query, reference)` with the same
#' seed and options (with a query, JIND first limits the genes to those both
#' share). With a `query` here, the saved model is also aligned to it.
#'
#' @inheritParams TrainScNym
#' @param query Optional unlabelled query (Seurat or SCE) to align the model
#'   to while training; the genes are then limited to those it shares with the
#'   reference.
#' @param ... JIND options (see `pybridge.JINDConfig` in Python), e.g.
#'   `outlier_fraction = 0.1`, `n_top_genes = 3000`.
#' @return A `pybridge_model` (its `path`, `method`, `classes`, `n_genes` and
#'   training `params`).
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   ref <- subset(seu, tech != "indrop")
#'   model <- TrainJIND(ref, labels = "cell_type", path = file.path(tempdir(), "panc8-jind"), n_epochs = 10)
#'   model
#'   # each query is aligned to the saved classifier, without the reference data
#'   q1 <- RunJIND(subset(seu, tech == "indrop"), model, gan_epochs = 2)
#'   q2 <- RunJIND(subset(seu, tech == "celseq"), model$path, align = FALSE)
#' }
#' }
#' @export
TrainJIND <- function(reference, labels = "cell_type", path = NULL, query = NULL, assay = NULL, query.assay = NULL,
                      seed = 0, device = "auto", verbose = TRUE, layer = NULL, query.layer = NULL, ...) {
  .run_training(reference, method = "jind", fn = "TrainJIND", labels = labels, path = path, query = query,
                assay = assay, query.assay = query.assay, seed = seed, device = device, verbose = verbose,
                layer = layer, query.layer = query.layer, options = list(...),
                reserved = c("labels", "assay", "query.assay", "seed", "device", "verbose"))
}
