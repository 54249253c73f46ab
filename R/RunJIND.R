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
