#' Annotate cells with a linear classifier
#'
#' Transfers labels from a labelled reference with L2-regularised multinomial
#' logistic regression on log(CPM + 1) of the genes both objects share: the
#' model class behind CellTypist, with scikit-learn's objective
#' (`LogisticRegression(C = 1)`), trained with L-BFGS in PyTorch on a sparse
#' matrix. It is the baseline the deep annotators must beat. A thin wrapper on
#' the same machinery as [RunScNym()]; see there for the inputs, the backends
#' and what is written (`predicted.<name>`, `predicted.<name>.score`, with
#' rejection `predicted.<name>.raw`, per-class probabilities and the
#' parameters). The embedding (reduction `<name>`) holds the class logits.
#'
#' @inheritParams RunScNym
#' @param reference The labelled reference: a Seurat object, a
#'   SingleCellExperiment, the path of an `.h5ad` or `.rds` file, or a linear
#'   model saved by [TrainLinear()] (its return value or its directory); a
#'   saved model is applied without retraining.
#' @param ... Options of the linear model (see `pybridge.LinearConfig` in
#'   Python), e.g. `C = 0.1` (the inverse regularisation strength; smaller is
#'   stronger), `reject = TRUE` (cells below their predicted type's threshold
#'   from held-back reference cells become `"Unassigned"`), `n_top_genes =
#'   2000`, `val_fraction = 0` (train on every reference cell, as
#'   scikit-learn does; no calibration or rejection thresholds then),
#'   `calibrate = FALSE`, `dtype = "float64"`.
#' @return `object` with the results added.
#' @seealso [TrainLinear()], [RunScNym()], [RunJIND()]
#' @rdname RunLinear
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   query <- subset(seu, tech == "indrop")
#'   ref <- subset(seu, tech != "indrop")
#'   query <- RunLinear(query, ref, labels = "cell_type")
#'   table(query$predicted.linear, query$cell_type)
#' }
#' }
#' @export
RunLinear.Seurat <- function(object, reference, labels = "cell_type", assay = NULL, name = "linear", seed = 0,
                             device = "auto", verbose = TRUE, reference.assay = NULL, layer = NULL,
                             reference.layer = NULL, ...) {
  .run_annotation(object, reference, method = "linear", fn = "RunLinear", labels = labels, assay = assay,
                  reference.assay = reference.assay, name = name, seed = seed, device = device, verbose = verbose,
                  layer = layer, reference.layer = reference.layer, options = list(...), call = sys.call(),
                  reserved = c("labels", "assay", "name", "seed", "device", "verbose", "reference.assay"))
}

#' @rdname RunLinear
#' @export
RunLinear.SingleCellExperiment <- RunLinear.Seurat

#' Train a linear classifier once and save it
#'
#' Trains the linear annotator of [RunLinear()] on a labelled reference and
#' saves it (weights in safetensors, metadata in JSON) to the directory
#' `path`. Pass the result, or the directory, as `reference` to
#' [RunLinear()] to annotate queries without the reference data. With a
#' `query`, the model uses only the genes the two share (the query's cells are
#' not used); a later query is matched to the model's genes by name, missing
#' ones count as zero.
#'
#' @inheritParams TrainScNym
#' @param query Optional query (Seurat or SCE) whose genes the model is
#'   limited to.
#' @param ... Options of the linear model (see `pybridge.LinearConfig` in
#'   Python), e.g. `C = 0.1`, `n_top_genes = 2000`.
#' @return A `pybridge_model` (its `path`, `method`, `classes`, `n_genes` and
#'   training `params`).
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   ref <- subset(seu, tech != "indrop")
#'   model <- TrainLinear(ref, labels = "cell_type", path = file.path(tempdir(), "panc8-linear"))
#'   model
#'   q1 <- RunLinear(subset(seu, tech == "indrop"), model)
#'   q2 <- RunLinear(subset(seu, tech == "celseq"), model$path, reject = TRUE)
#' }
#' }
#' @export
TrainLinear <- function(reference, labels = "cell_type", path = NULL, query = NULL, assay = NULL, query.assay = NULL,
                        seed = 0, device = "auto", verbose = TRUE, layer = NULL, query.layer = NULL, ...) {
  .run_training(reference, method = "linear", fn = "TrainLinear", labels = labels, path = path, query = query,
                assay = assay, query.assay = query.assay, seed = seed, device = device, verbose = verbose,
                layer = layer, query.layer = query.layer, options = list(...),
                reserved = c("labels", "assay", "query.assay", "seed", "device", "verbose"))
}
