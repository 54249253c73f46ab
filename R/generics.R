# S3 generics (methods for Seurat and SingleCellExperiment in RunScNym.R etc.)
# and the two workers every Run* function uses: .run_annotation() for
# reference-based classifiers and .run_clustering() for clustering methods.
# A new method's R entry point is a thin wrapper around one of them.

#' @rdname RunScNym
#' @export
RunScNym <- function(object, ...) UseMethod("RunScNym")

#' @rdname RunScNym
#' @export
RunScNym.default <- function(object, ...) .no_method("RunScNym", object)

#' @rdname RunJIND
#' @export
RunJIND <- function(object, ...) UseMethod("RunJIND")

#' @rdname RunJIND
#' @export
RunJIND.default <- function(object, ...) .no_method("RunJIND", object)

#' @rdname RunItClust
#' @export
RunItClust <- function(object, ...) UseMethod("RunItClust")

#' @rdname RunItClust
#' @export
RunItClust.default <- function(object, ...) .no_method("RunItClust", object)

#' @rdname RunCICL
#' @export
RunCICL <- function(object, ...) UseMethod("RunCICL")

#' @rdname RunCICL
#' @export
RunCICL.default <- function(object, ...) .no_method("RunCICL", object)

#' @rdname RunNMFTransfer
#' @export
RunNMFTransfer <- function(object, ...) UseMethod("RunNMFTransfer")

#' @rdname RunNMFTransfer
#' @export
RunNMFTransfer.default <- function(object, ...) .no_method("RunNMFTransfer", object)

#' The methods the Python side offers
#'
#' @return A data.frame with the method `name`, its `kind` ("annotation" or
#'   "clustering") and whether it has a reusable model (`trainable`).
#' @export
pybridge_methods <- function() {
  out <- .call_python(list(task = "methods"), verbose = FALSE)
  data.frame(name = as.character(as.vector(out$name)), kind = as.character(as.vector(out$kind)),
             trainable = as.logical(as.vector(out$trainable)), stringsAsFactors = FALSE)
}

.python_names <- list(RunScNym = "scnym", RunJIND = "jind", RunItClust = "itclust", RunCICL = "cicl",
                      RunNMFTransfer = "nmf_transfer")

.no_method <- function(fn, object) {
  .abort(fn, "() works on a Seurat object or a SingleCellExperiment, not on ", .class_text(object), ". ",
         "For an AnnData object use the Python package (pybridge.", .python_names[[fn]], "()).",
         class = "pybridge_input_error")
}

.check_common <- function(seed, device, verbose) {
  if (!is.numeric(seed) || length(seed) != 1L || is.na(seed) || seed != round(seed) || seed < 0) {
    .abort("`seed` must be one non-negative whole number.", class = "pybridge_input_error")
  }
  if (!is.character(device) || length(device) != 1L || is.na(device) ||
      !grepl("^(auto|cpu|cuda(:[0-9]+)?)$", device)) {
    .abort("`device` must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\".", class = "pybridge_input_error")
  }
  if (!is.logical(verbose) || length(verbose) != 1L || is.na(verbose)) {
    .abort("`verbose` must be TRUE or FALSE.", class = "pybridge_input_error")
  }
}

.check_labels_arg <- function(labels) {
  if (!is.character(labels) || length(labels) != 1L || is.na(labels) || !nzchar(labels)) {
    .abort("`labels` must be the name of one cell metadata column of the reference.", class = "pybridge_input_error")
  }
}

.now <- function() proc.time()[["elapsed"]]

.call_text <- function(call, fn = NULL) {
  if (is.null(call)) return(NA_character_)
  if (!is.null(fn)) call[[1L]] <- as.name(fn)  # RunScNym(...), not RunScNym.Seurat(...)
  paste(deparse(call, width.cutoff = 500L), collapse = " ")
}

# The argument names of the Run* / Train* method that called the worker calling this.
.caller_args <- function() names(formals(sys.function(sys.parent(2))))

# The worker behind every reference-based Run* function.
.run_annotation <- function(object, reference, method, fn, labels = "cell_type", assay = NULL,
                            reference.assay = NULL, name = method, seed = 0, device = "auto", verbose = TRUE,
                            options = list(), call = NULL) {
  t0 <- .now()
  .check_common(seed, device, verbose)
  .check_labels_arg(labels)
  options <- .options(options, fn, .caller_args())
  keys <- .key_columns(options)
  .check_target(object, name, method, "annotation", verbose = verbose)  # says when it will replace earlier results
  query <- .extract(object, assay = assay, columns = keys, what = "query")
  ref <- .resolve_reference(reference, labels, keys, reference.assay)
  if (identical(ref$kind, "model") && !is.null(ref$method) && !identical(ref$method, method)) {
    .abort("The reference is a saved '", ref$method, "' model; ", fn, "() needs a '", method, "' model.",
           class = "pybridge_input_error")
  }
  .check_shared_genes(query, ref)
  .inform(verbose, fn, ": annotating ", length(query$cells), " cells (", length(query$genes), " genes, assay '",
          query$assay, "') with ",
          method, "; reference: ", .describe_reference(ref), ".")
  request <- list(task = "annotate", method = method, labels_key = labels, seed = as.integer(seed),
                  device = device, verbose = isTRUE(verbose), options = options)
  t_extract <- .now() - t0
  out <- .call_python(request, query = query, reference = if (.is_payload(ref)) ref else ref[c("kind", "path")],
                      verbose = verbose)
  t_store <- .now()
  res <- .normalize_result(out)
  params <- c(res$params, list(
    method = method, name = name, `function` = fn, labels = labels, assay = query$assay,
    reference = .describe_reference(ref), options = options,
    r_bridge = c(out$bridge, list(extract_s = t_extract))
  ))
  object <- .store_result(object, res, name = name, method = method, fn = fn, assay = query$assay,
                          cells = query$cells, params = params, call_string = .call_text(call, fn), verbose = verbose)
  if (isTRUE(verbose) && res$kind == "clustering") {
    .inform(TRUE, fn, ": done in ", .fmt_s(.now() - t0), " (", length(res$cluster_levels), " clusters). Added ",
            paste(names(.result_columns(res, name)), collapse = ", "), ".", type = "done")
  } else if (isTRUE(verbose)) {
    n_un <- sum(res$labels == "Unassigned")
    .inform(TRUE, fn, ": done in ", .fmt_s(.now() - t0), " (", length(res$classes), " classes, mean score ",
            sprintf("%.2f", mean(res$score)), if (n_un) paste0(", ", n_un, " Unassigned"), "). Added predicted.",
            name, ", predicted.", name, ".score",
            if (.is_seurat(object)) paste0(", reduction '", name, "', assay 'prediction.score.", name, "'")
            else paste0(", reducedDim '", toupper(name), "', metadata()$pybridge$", name), ".", type = "done")
  }
  object
}

# The worker behind clustering Run* functions (reference optional).
.run_clustering <- function(object, method, fn, reference = NULL, n.clusters = NULL, labels = NULL, assay = NULL,
                            reference.assay = NULL, name = method, seed = 0, device = "auto", verbose = TRUE,
                            options = list(), call = NULL, send_labels = TRUE) {
  t0 <- .now()
  .check_common(seed, device, verbose)
  if (!is.null(labels)) .check_labels_arg(labels)
  if (!is.null(n.clusters) && (!is.numeric(n.clusters) || length(n.clusters) != 1L || is.na(n.clusters) ||
                              n.clusters < 1 || n.clusters != round(n.clusters))) {
    .abort("`n.clusters` must be one positive whole number or NULL.", class = "pybridge_input_error")
  }
  options <- .options(options, fn, .caller_args())
  keys <- .key_columns(options)
  .check_target(object, name, method, "clustering", verbose = verbose)
  query <- .extract(object, assay = assay, columns = keys, what = "object")
  ref <- NULL
  if (!is.null(reference)) {
    ref <- .resolve_reference(reference, if (is.null(labels)) character() else labels, keys, reference.assay)
    if (identical(ref$kind, "model")) {
      .abort(fn, "() does not take a saved model as reference.", class = "pybridge_input_error")
    }
    .check_shared_genes(query, ref)
  }
  .inform(verbose, fn, ": clustering ", length(query$cells), " cells (assay '", query$assay, "') with ", method,
          if (!is.null(ref)) paste0("; reference: ", .describe_reference(ref)), ".")
  request <- list(task = "cluster", method = method, seed = as.integer(seed), device = device,
                  verbose = isTRUE(verbose), options = options,
                  n_clusters = if (is.null(n.clusters)) NULL else as.integer(n.clusters))
  # labels = NULL is sent as None (e.g. NMF transfer then clusters the reference itself)
  if (isTRUE(send_labels)) request["labels_key"] <- list(labels)
  t_extract <- .now() - t0
  out <- .call_python(request, query = query, reference = ref, verbose = verbose)
  res <- .normalize_result(out)
  params <- c(res$params, list(
    method = method, name = name, `function` = fn, labels = labels, assay = query$assay,
    reference = if (is.null(ref)) NULL else .describe_reference(ref), n.clusters = n.clusters,
    options = options, cluster_map = res$cluster_map,
    r_bridge = c(out$bridge, list(extract_s = t_extract))
  ))
  object <- .store_result(object, res, name = name, method = method, fn = fn, assay = query$assay,
                          cells = query$cells, params = params, call_string = .call_text(call, fn), verbose = verbose)
  .inform(verbose, fn, ": done in ", .fmt_s(.now() - t0), " (", length(res$cluster_levels), " clusters). Added ",
          paste(names(.result_columns(res, name)), collapse = ", "), ".", type = "done")
  object
}

# The worker behind Train* functions: fit on a reference, save to `path`.
.run_training <- function(reference, method, fn, labels = "cell_type", path = NULL, query = NULL, assay = NULL,
                          query.assay = NULL, seed = 0, device = "auto", verbose = TRUE, options = list()) {
  t0 <- .now()
  .check_common(seed, device, verbose)
  .check_labels_arg(labels)
  options <- .options(options, fn, .caller_args())
  keys <- .key_columns(options)
  ref <- .resolve_reference(reference, labels, keys, assay)
  if (identical(ref$kind, "model")) .abort(fn, "() needs a labelled reference, not a saved model.", class = "pybridge_input_error")
  q <- NULL
  if (!is.null(query)) {
    q <- .extract(query, assay = query.assay, columns = keys, what = "query")
    .check_shared_genes(q, ref)
  }
  if (is.null(path)) {
    path <- tempfile(paste0("pybridge-", method, "-"))
    .inform(verbose, "No `path` given: the model is saved in the temporary directory ", path,
            ", which is deleted when R exits.")
  }
  if (!is.character(path) || length(path) != 1L || is.na(path)) .abort("`path` must be one directory path.")
  path <- path.expand(path)
  if (file.exists(path) && !dir.exists(path)) .abort("`path` (", path, ") exists and is not a directory.")
  .inform(verbose, fn, ": training ", method, " on the reference (", .describe_reference(ref), ")",
          if (!is.null(q)) paste0(" with ", length(q$cells), " unlabelled query cells"), ".")
  request <- list(task = "train", method = method, labels_key = labels, seed = as.integer(seed), device = device,
                  verbose = isTRUE(verbose), options = options, path = path)
  out <- .call_python(request, query = q, reference = if (.is_payload(ref)) ref else ref[c("kind", "path")],
                      verbose = verbose)
  model <- structure(
    list(path = as.character(out$path), method = as.character(out$method), classes = as.character(as.vector(out$classes)),
         n_genes = as.integer(out$n_genes),
         params = jsonlite::fromJSON(out$params_json, simplifyVector = TRUE, simplifyDataFrame = FALSE,
                                     simplifyMatrix = FALSE)),
    class = "pybridge_model"
  )
  .inform(verbose, fn, ": saved the ", method, " model (", length(model$classes), " classes, ", model$n_genes,
          " genes) to ", model$path, " in ", .fmt_s(.now() - t0), ".", type = "done")
  model
}

#' @export
print.pybridge_model <- function(x, ...) {
  cat(sprintf("<pybridge %s model: %d classes, %d genes>\n  path: %s\n  classes: %s\n", x$method,
              length(x$classes), x$n_genes, x$path, .examples(x$classes, 8L)))
  invisible(x)
}

#' Open a saved pybridge model directory
#'
#' @param path A directory written by [TrainScNym()], [TrainJIND()] (or `model.save()` in Python).
#' @return A `pybridge_model` object usable as `reference` in the Run functions.
#' @export
read_pybridge_model <- function(path) {
  meta_file <- file.path(path.expand(path), "pybridge.json")
  if (!file.exists(meta_file)) {
    .abort(path, " is not a saved pybridge model (it has no pybridge.json).", class = "pybridge_input_error")
  }
  meta <- jsonlite::fromJSON(meta_file, simplifyVector = TRUE, simplifyDataFrame = FALSE, simplifyMatrix = FALSE)
  structure(list(path = normalizePath(path), method = meta$method, classes = as.character(meta$classes),
                 n_genes = length(meta$genes), params = list(config = meta$config, seed = meta$seed)),
            class = "pybridge_model")
}
