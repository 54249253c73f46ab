#' Annotate cells with a consensus of several annotators
#'
#' Trains each of `methods` on the labelled reference (each with its own
#' defaults, changed only by `member.options`, and the same `seed`), annotates
#' `object` with each, and combines them: the per-class probabilities of the
#' members (each calibrated on held-back reference cells) are averaged over
#' the union of their classes; the label is the class with the highest mean
#' probability, the score that mean probability, and the agreement the share of
#' members whose own top label (before their own rejection) is that label.
#' The computation runs in the Python package pybridge
#' (`pybridge.consensus()`), as for [RunScNym()].
#'
#' With `reject = TRUE` a cell is `"Unassigned"` where the members disagree
#' (agreement below 1) and its score is below the rejection threshold of its
#' label: the mean of the members' per-class thresholds, which each member
#' sets on its held-back reference cells. A cell on which all members agree is
#' never rejected. With `reject = FALSE` no cell is.
#'
#' @section Output:
#' The returned object is the input with, and only with:
#' * cell metadata (`meta.data` / `colData`): `predicted.<name>` (factor of the
#'   reference's class names, plus `"Unassigned"` when rejecting),
#'   `predicted.<name>.score` (the mean probability of that label, in
#'   \[0, 1\]), with rejection `predicted.<name>.raw` (the label before
#'   rejection), `predicted.<name>.agreement` (the share of members voting for
#'   the label, in \[1/k, 1\] for k members) and, for each member `m`,
#'   `predicted.<name>.<m>` (its label before its own rejection; factor of the
#'   classes) and `predicted.<name>.<m>.score` (its score);
#' * the mean per-class probabilities: assay `prediction.score.<name>`
#'   (Seurat) or `metadata(object)$pybridge[[<name>]]$probabilities` (SCE), as
#'   for [RunScNym()]; there is no embedding;
#' * the parameters (the members, the thresholds, each member's configuration,
#'   calibration and timings): the command log entry `RunConsensus.<name>`
#'   (Seurat) or `metadata(object)$pybridge[[<name>]]$params` (SCE).
#'
#' Running again with the same `name` replaces these results (member columns
#' of the earlier run included); if anything else already uses one of these
#' names, `RunConsensus()` stops before training.
#'
#' @inheritParams RunScNym
#' @param reference The labelled reference: a Seurat object, a
#'   SingleCellExperiment or the path of an `.h5ad` or `.rds` file (not a saved
#'   model: every member is trained on it).
#' @param methods The member methods: at least two different annotation
#'   methods of [pybridge_methods()] (kind `"annotation"`).
#' @param reject `TRUE` or `FALSE`: label cells `"Unassigned"` where the members
#'   disagree and the score is low (see Details).
#' @param member.options Options of single members, as a list named by member
#'   with one named list of that method's options each (the options its own
#'   `Run*` function takes in `...`), e.g.
#'   `list(scnym = list(n_epochs = 50), jind = list(gan_epochs = 5))`.
#' @param name Name of the outputs (see Output).
#' @param ... Not used.
#' @return `object` with the results added.
#' @seealso [RunScNym()], [RunJIND()], [pybridge_methods()]
#' @rdname RunConsensus
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   seu <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   query <- subset(seu, tech == "indrop")
#'   ref <- subset(seu, tech != "indrop")
#'   fast <- list(scnym = list(n_epochs = 10), jind = list(n_epochs = 10, gan_epochs = 2))
#'   query <- RunConsensus(query, ref, methods = c("scnym", "jind"), labels = "cell_type", member.options = fast)
#'   table(query$predicted.consensus, query$cell_type)
#'   summary(query$predicted.consensus.agreement)
#' }
#' }
#' @export
RunConsensus.Seurat <- function(object, reference, methods = c("scnym", "jind", "linear"), labels = "cell_type",
                                assay = NULL, reference.assay = NULL, name = "consensus", reject = TRUE,
                                member.options = list(), seed = 0, device = "auto", verbose = TRUE, layer = NULL,
                                reference.layer = NULL, ...) {
  if (...length()) {
    .abort("RunConsensus() takes no method options in `...` (got ", paste0("`", names(list(...)), "`", collapse = ", "),
           "): pass them per member, e.g. member.options = list(scnym = list(n_epochs = 50)).",
           class = "pybridge_input_error")
  }
  reserved <- c("labels", "assay", "name", "seed", "device", "verbose", "reference.assay", "layer", "reference.layer")
  methods <- .check_consensus_methods(methods)
  if (!is.logical(reject) || length(reject) != 1L || is.na(reject)) {
    .abort("`reject` must be TRUE or FALSE.", class = "pybridge_input_error")
  }
  member.options <- .check_member_options(member.options, methods, reserved)
  # the consensus is no registered method: its record, for the names it writes (checked before training)
  info <- list(kind = "annotation", maps_types = FALSE, saved_model = FALSE,
               extra_fields = c("agreement", methods, paste0(methods, ".score")))
  .run_annotation(object, reference, method = "consensus", fn = "RunConsensus", labels = labels, assay = assay,
                  reference.assay = reference.assay, name = name, seed = seed, device = device, verbose = verbose,
                  layer = layer, reference.layer = reference.layer, call = sys.call(), info = info,
                  sent = list(methods = methods, reject = reject, member_options = member.options))
}

#' @rdname RunConsensus
#' @export
RunConsensus.SingleCellExperiment <- RunConsensus.Seurat

.check_consensus_methods <- function(methods) {
  if (!is.character(methods) || anyNA(methods) || !all(nzchar(methods))) {
    .abort("`methods` must be a character vector of method names (e.g. c(\"scnym\", \"jind\")).",
           class = "pybridge_input_error")
  }
  twice <- unique(methods[duplicated(methods)])
  if (length(twice)) {
    .abort("`methods` names ", paste0("'", twice, "'", collapse = ", "), " more than once: name each member once.",
           class = "pybridge_input_error")
  }
  if (length(methods) < 2L) {
    .abort("A consensus needs at least two different methods in `methods`, got ",
           if (length(methods)) paste0("only '", methods, "'") else "none",
           if (length(methods)) paste0(": for one method call its own Run function.") else ".",
           class = "pybridge_input_error")
  }
  methods
}

# `member.options`: list(<member> = list(<option> = value, ...), ...), each member one of `methods`; the
# options are checked as a Run function's `...` are (names with "_", no option an R argument sets).
.check_member_options <- function(member.options, methods, reserved) {
  if (is.null(member.options)) member.options <- list()
  if (!is.list(member.options) || is.object(member.options)) {
    .abort("`member.options` must be a list named by member, e.g. list(scnym = list(n_epochs = 50)).",
           class = "pybridge_input_error")
  }
  if (!length(member.options)) return(structure(list(), names = character()))
  nms <- names(member.options)
  if (is.null(nms) || any(is.na(nms) | !nzchar(nms))) {
    .abort("`member.options` must be named by member, e.g. list(scnym = list(n_epochs = 50)).",
           class = "pybridge_input_error")
  }
  if (anyDuplicated(nms)) {
    .abort("`member.options` names '", nms[duplicated(nms)][[1]], "' more than once.", class = "pybridge_input_error")
  }
  other <- setdiff(nms, methods)
  if (length(other)) {
    .abort("`member.options` has options for ", paste0("'", other, "'", collapse = ", "), ", which ",
           if (length(other) == 1L) "is" else "are", " not among `methods` (", paste(methods, collapse = ", "), ").",
           class = "pybridge_input_error")
  }
  out <- list()
  for (m in nms) {
    opts <- member.options[[m]]
    if (!is.list(opts) || is.object(opts) || (length(opts) && (is.null(names(opts)) || !all(nzchar(names(opts)))))) {
      .abort("`member.options$", m, "` must be a named list of ", m, " options (e.g. list(n_epochs = 50)).",
             class = "pybridge_input_error")
    }
    out[[m]] <- .options(opts, "RunConsensus", reserved)
  }
  out
}
