#' Plot the confidence of an annotation per predicted cell type
#'
#' Shows `predicted.<name>.score` (the top probability) of the cells of each
#' predicted type, as violins or as one histogram per type, types ordered by
#' their number of cells. Where rejection ran, cells are grouped by their label
#' before rejection (`predicted.<name>.raw`), so each class's whole
#' distribution shows, and the class's rejection threshold is marked: the cells
#' below it are the ones labelled `"Unassigned"`. Thresholds are read from the
#' stored parameters (Seurat: the command log entry of the run, see
#' `SeuratObject::Command()`; SCE: `metadata(object)$pybridge[[name]]$params`)
#' and marked only where they decided the rejection (not for scNym's
#' `reject.score = "distance"`, whose thresholds are on a distance in the
#' embedding).
#'
#' With `truth`, each type's cells are split into correctly and wrongly
#' predicted ones (two colours; a cell whose true type the reference lacks
#' counts as wrong), to see whether the thresholds separate them. Cells without
#' a true label (`NA`) are left out then.
#'
#' The object is not changed. Needs the R package ggplot2.
#'
#' @param object A Seurat object or a SingleCellExperiment annotated by
#'   [RunScNym()], [RunJIND()] (or Python's `pybridge.r.write_result_rds()`).
#' @param name The `name` the annotation was stored under.
#' @param truth Optional: the cell metadata column (`meta.data` / `colData`)
#'   with the true labels.
#' @param type `"violin"` (one violin per type) or `"histogram"` (one panel
#'   per type).
#' @return A ggplot object (print it to draw it, or add layers and themes).
#' @seealso [RunScNym()], [RunJIND()]; in Python, `pybridge.pl.confidence()`
#'   and the reliability diagram `pybridge.pl.reliability()`.
#' @examples
#' if (requireNamespace("SeuratObject", quietly = TRUE) && requireNamespace("ggplot2", quietly = TRUE)) {
#'   # an annotation filled in by hand (RunScNym() writes these columns)
#'   obj <- SeuratObject::pbmc_small
#'   set.seed(1)
#'   pred <- as.character(obj$RNA_snn_res.1)
#'   obj$predicted.demo <- factor(paste("type", pred))
#'   obj$predicted.demo.score <- stats::runif(ncol(obj), 0.3, 1)
#'   obj$true_type <- ifelse(stats::runif(ncol(obj)) < 0.8, paste("type", pred), "type 0")
#'   print(PlotConfidence(obj, "demo", truth = "true_type"))
#'   print(PlotConfidence(obj, "demo", type = "histogram"))
#' }
#' @export
PlotConfidence <- function(object, name, truth = NULL, type = c("violin", "histogram")) {
  type <- match.arg(type)
  if (!.is_seurat(object) && !.is_sce(object)) {
    .abort("PlotConfidence() needs a Seurat object or a SingleCellExperiment, not ", .class_text(object), ".",
           class = "pybridge_input_error")
  }
  .need("ggplot2", "for PlotConfidence()")
  ann <- .stored_annotation(object, name)
  keep <- !is.na(ann$score)
  status <- NULL
  if (!is.null(truth)) {
    true_labels <- .truth_column(object, truth, ann)
    keep <- keep & !is.na(true_labels)
    ok <- as.character(ann$predicted) == true_labels
    status <- ifelse(ok, "correct", "wrong")[keep]
  }
  predicted <- as.character(ann$predicted)[keep]
  counts <- table(predicted)
  types <- names(counts)[order(names(counts) == "Unassigned", -as.vector(counts), names(counts))]
  tick <- stats::setNames(paste0(types, " (", as.vector(counts[types]), ")"), types)
  df <- data.frame(type = factor(predicted, levels = types), score = ann$score[keep])
  df$status <- if (is.null(status)) "cells" else
    factor(sprintf("%s (%d)", status, as.vector(table(status)[status])),
           levels = sprintf("%s (%d)", c("correct", "wrong"), c(sum(status == "correct"), sum(status == "wrong"))))
  fills <- stats::setNames(if (is.null(status)) "#8c8c8c" else c("#4c72b0", "#dd8452"), levels(factor(df$status)))
  thresholds <- .threshold_frame(ann, types)

  p <- if (type == "violin") .confidence_violins(df, types, tick, thresholds) else
    .confidence_histograms(df, tick, thresholds)
  p <- p + ggplot2::labs(
    x = if (type == "histogram") paste0("confidence (", ann$column, ")") else
      if (ann$raw) "predicted type, before rejection (cells)" else "predicted type (cells)",
    y = if (type == "histogram") "cells" else paste0("confidence (", ann$column, ")")
  )
  subtitle <- NULL
  if (ann$raw) {
    n_rej <- sum(as.character(ann$labels)[keep] == "Unassigned")
    subtitle <- sprintf("%d of %d cells (%.1f%%) rejected as Unassigned", n_rej, sum(keep),
                        100 * n_rej / max(sum(keep), 1))
  }
  p <- p + ggplot2::scale_fill_manual(values = fills, name = NULL,
                                 guide = if (is.null(status)) "none" else "legend") +
    ggplot2::scale_colour_manual(values = fills, guide = "none") +
    ggplot2::scale_linetype_manual(values = c(`rejection threshold` = "solid"), name = NULL) +
    ggplot2::labs(title = paste0(name, ": confidence per predicted type"), subtitle = subtitle) +
    ggplot2::theme_bw()
  if (type == "violin" && (length(types) > 4L || max(nchar(types)) > 10L)) {
    p <- p + ggplot2::theme(axis.text.x = ggplot2::element_text(angle = 35, hjust = 1))
  }
  p
}

# One violin per type (and status), at explicit positions: type i at x = i, correct / wrong at i -/+ 0.2.
.confidence_violins <- function(df, types, tick, thresholds) {
  split <- nlevels(factor(df$status)) > 1L
  df$x <- as.integer(df$type) + if (split) ifelse(as.integer(factor(df$status)) == 1L, -0.2, 0.2) else 0
  df$group <- paste(df$type, df$status, sep = "\r")
  n_cells <- stats::ave(df$score, df$group, FUN = length)
  n_distinct <- stats::ave(df$score, df$group, FUN = function(v) length(unique(v)))
  width <- if (split) 0.38 else 0.8
  p <- ggplot2::ggplot(df, .aes(x = "x", y = "score", fill = "status", group = "group")) +
    ggplot2::geom_violin(data = df[n_distinct >= 2, , drop = FALSE], scale = "width", width = width, alpha = 0.7,
                         colour = "grey30", linewidth = 0.3, draw_quantiles = 0.5, na.rm = TRUE)
  small <- df[n_cells < 10 | n_distinct < 2, , drop = FALSE]
  if (nrow(small)) {
    # too few cells for a density: the cells themselves
    p <- p + ggplot2::geom_point(data = small, .aes(colour = "status"), size = 1.2, show.legend = FALSE)
  }
  if (!is.null(thresholds)) {
    thresholds$x0 <- match(thresholds$type, types) - 0.45
    thresholds$x1 <- match(thresholds$type, types) + 0.45
    p <- p + ggplot2::geom_segment(data = thresholds, .aes(x = "x0", xend = "x1", y = "threshold",
                                                           yend = "threshold", linetype = "what"),
                                   colour = "#c44e52", linewidth = 1, inherit.aes = FALSE)
  }
  p <- p + ggplot2::scale_x_continuous(breaks = seq_along(types), labels = unname(tick[types]),
                                       minor_breaks = NULL) +
    ggplot2::coord_cartesian(xlim = c(0.5, length(types) + 0.5), ylim = c(0, 1.02), expand = FALSE)
  p
}

# One histogram panel per type, the threshold as a vertical line.
.confidence_histograms <- function(df, tick, thresholds) {
  df$panel <- factor(tick[as.character(df$type)], levels = tick)
  p <- ggplot2::ggplot(df, .aes(x = "score", fill = "status")) +
    ggplot2::geom_histogram(binwidth = 0.04, boundary = 0, position = "stack", na.rm = TRUE) +
    ggplot2::facet_wrap(facets = "panel", scales = "free_y") +
    ggplot2::coord_cartesian(xlim = c(0, 1))
  if (!is.null(thresholds)) {
    thresholds$panel <- factor(tick[thresholds$type], levels = tick)
    p <- p + ggplot2::geom_vline(data = thresholds, .aes(xintercept = "threshold", linetype = "what"),
                                 colour = "#c44e52", linewidth = 0.8)
  }
  p
}

# aes() from column names (no non-standard evaluation, so no undefined globals)
.aes <- function(...) do.call(ggplot2::aes, lapply(list(...), as.name))

# What an annotation stored under `name` holds: labels, the label grouped by (before rejection where it
# ran), scores, classes and the thresholds that decided the rejection (NULL where none did).
.stored_annotation <- function(object, name) {
  if (!is.character(name) || length(name) != 1L || is.na(name) || !nzchar(name)) {
    .abort("`name` must be one string: the `name` the annotation was stored under.", class = "pybridge_input_error")
  }
  md <- .metadata(object)
  cols <- paste0("predicted.", name, c("", ".score", ".raw"))
  if (!all(cols[1:2] %in% colnames(md))) {
    stored <- sub("^predicted[.](.*)[.]score$", "\\1", grep("^predicted[.].*[.]score$", colnames(md), value = TRUE))
    stored <- stored[paste0("predicted.", stored) %in% colnames(md)]
    .abort("No annotation named '", name, "' in the object: it has no ",
           paste(setdiff(cols[1:2], colnames(md)), collapse = " or "), " column (",
           if (length(stored)) paste0("annotations stored here: ", .examples(stored)) else "no annotation stored",
           "). Pass the `name` of the run.", class = "pybridge_input_error")
  }
  raw <- cols[3] %in% colnames(md)
  labels <- md[[cols[1]]]
  predicted <- if (raw) md[[cols[3]]] else labels
  params <- .stored_params(object, name)
  classes <- if (.is_sce(object)) S4Vectors::metadata(object)$pybridge[[name]]$classes else NULL
  if (is.null(classes)) {
    classes <- if (is.factor(predicted)) levels(predicted) else sort(unique(as.character(predicted)))
    classes <- setdiff(classes, "Unassigned")
  }
  thr <- suppressWarnings(as.numeric(unlist(params$thresholds)))
  score_rule <- params$reject_score %||% "confidence"
  if (!raw || !length(thr) || length(thr) != length(classes) || !identical(as.character(score_rule), "confidence")) {
    thr <- NULL
  }
  list(labels = labels, predicted = predicted, score = as.numeric(md[[cols[2]]]), classes = as.character(classes),
       thresholds = thr, raw = raw, column = cols[2])
}

# The parameters stored with the run (an empty list when none are, e.g. columns filled in by hand).
.stored_params <- function(object, name) {
  if (.is_seurat(object)) {
    cmds <- .seurat_commands_for(object, name)
    if (!length(cmds)) return(list())
    return(methods::slot(object[[cmds[length(cmds)]]], "params"))
  }
  S4Vectors::metadata(object)$pybridge[[name]]$params %||% list()
}

.truth_column <- function(object, truth, ann) {
  md <- .metadata(object)
  if (!is.character(truth) || length(truth) != 1L || is.na(truth) || !truth %in% colnames(md)) {
    .abort("`truth` must name a cell metadata column with the true labels; '", paste(truth, collapse = "', '"),
           "' is not one (columns: ", .examples(colnames(md), 10L), ").", class = "pybridge_input_error")
  }
  true_labels <- as.character(md[[truth]])
  known <- unique(true_labels[!is.na(true_labels)])
  if (!length(intersect(known, union(ann$classes, setdiff(as.character(ann$predicted), "Unassigned"))))) {
    .abort("The column '", truth, "' shares no labels with the predicted types (true labels: ", .examples(known),
           "; predicted: ", .examples(ann$classes), "). Pass the column with the reference's cell type names.",
           class = "pybridge_input_error")
  }
  true_labels
}

.threshold_frame <- function(ann, types) {
  if (is.null(ann$thresholds)) return(NULL)
  present <- ann$classes %in% types
  if (!any(present)) return(NULL)
  data.frame(type = ann$classes[present], threshold = ann$thresholds[present], what = "rejection threshold")
}
