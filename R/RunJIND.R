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
#' @rdname RunJIND
#' @export
RunJIND.Seurat <- function(object, reference, labels = "cell_type", assay = NULL, name = "jind", seed = 0,
                           device = "auto", verbose = TRUE, reference.assay = NULL, ...) {
  .run_annotation(object, reference, method = "jind", fn = "RunJIND", labels = labels, assay = assay,
                  reference.assay = reference.assay, name = name, seed = seed, device = device, verbose = verbose,
                  options = list(...), call = sys.call())
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
#' \dontrun{
#' model <- TrainJIND(ref, labels = "cell_type", path = "models/jind")
#' q1 <- RunJIND(q1, model)
#' q2 <- RunJIND(q2, "models/jind")
#' }
#' @export
TrainJIND <- function(reference, labels = "cell_type", path = NULL, query = NULL, assay = NULL, query.assay = NULL,
                      seed = 0, device = "auto", verbose = TRUE, ...) {
  .run_training(reference, method = "jind", fn = "TrainJIND", labels = labels, path = path, query = query,
                assay = assay, query.assay = query.assay, seed = seed, device = device, verbose = verbose,
                options = list(...))
}
