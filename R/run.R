# The workers behind every Run* and Train* function, and the checks and option
# handling they share:
#   .run_annotation()  reference-based methods (RunScNym, RunJIND, RunItClust)
#   .run_clustering()  clustering methods with an optional reference (RunCICL, RunNMFTransfer)
#   .run_training()    Train* functions: fit on a reference, save the model
# A new method's R entry point is a thin wrapper around one of them that names
# the method, its R function and the arguments it sets itself (`reserved`).

.check_common <- function(device, verbose) {
  if (!is.character(device) || length(device) != 1L || is.na(device) ||
        !grepl("^(auto|cpu|cuda(:[0-9]+)?)$", device)) {
    .abort("`device` must be \"auto\", \"cpu\", \"cuda\" or \"cuda:N\".", class = "pybridge_input_error")
  }
  if (!is.logical(verbose) || length(verbose) != 1L || is.na(verbose)) {
    .abort("`verbose` must be TRUE or FALSE.", class = "pybridge_input_error")
  }
}

# The one place where R turns a whole number (R's `2` is a double) into the integer
# Python receives. `min`: 0 ("non-negative") or 1 ("positive"); `null_ok`: NULL passes.
.whole_number <- function(x, arg, min = 0, null_ok = FALSE) {
  if (is.null(x) && isTRUE(null_ok)) return(NULL)
  if (!is.numeric(x) || length(x) != 1L || is.na(x) || x != round(x) || x < min || x > .Machine$integer.max) {
    .abort("`", arg, "` must be one ", if (min >= 1) "positive" else "non-negative", " whole number",
           if (isTRUE(null_ok)) " or NULL", ".", class = "pybridge_input_error")
  }
  as.integer(x)
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

# ---------------------------------------------------------------- options
# Python keyword arguments that the R functions fill from their own arguments (Python name = R name).
.option_args <- c(labels_key = "labels", n_clusters = "n.clusters", key_added = "name", layer = "assay",
                  reference_layer = "reference.assay", query_layer = "query.assay", seed = "seed",
                  device = "device", verbose = "verbose")

# Options passed through `...`: R names use "." where Python uses "_". `reserved` names the R arguments
# of the calling Run*/Train* function (`fn`): an option that one of them sets is refused with a pointer
# to that argument.
.options <- function(dots, fn = NULL, reserved = character()) {
  if (!length(dots)) return(structure(list(), names = character()))
  nms <- names(dots)
  if (is.null(nms) || any(!nzchar(nms))) {
    .abort("Method options passed through `...` must be named (e.g. n_epochs = 50).", class = "pybridge_input_error")
  }
  names(dots) <- gsub(".", "_", nms, fixed = TRUE)
  taken <- names(dots)[names(dots) %in% names(.option_args) & .option_args[names(dots)] %in% reserved]
  if (length(taken)) {
    r_name <- .option_args[[taken[[1]]]]
    .abort("`", nms[match(taken[[1]], names(dots))], "` is set by ", fn, "()'s own argument `", r_name,
           "`: pass `", r_name, " = ...` instead.", class = "pybridge_input_error")
  }
  for (nm in names(dots)) {
    v <- dots[[nm]]
    if (!(is.null(v) || (is.atomic(v) && length(v) <= 1000L))) {
      .abort("Method option `", nm, "` must be a number, string, logical or a short vector of them.",
             class = "pybridge_input_error")
    }
  }
  dots
}

# Metadata columns named by *_key options (e.g. domain_key = "batch") travel with the data.
.key_columns <- function(options) {
  keys <- options[grepl("_key$", names(options))]
  unlist(Filter(function(v) is.character(v) && length(v) == 1L, keys), use.names = FALSE)
}

# ---------------------------------------------------------------- workers
# The worker behind every reference-based Run* function.
.run_annotation <- function(object, reference, method, fn, labels = "cell_type", assay = NULL,
                            reference.assay = NULL, name = method, seed = 0, device = "auto", verbose = TRUE,
                            options = list(), reserved = character(), call = NULL) {
  t0 <- .now()
  seed <- .whole_number(seed, "seed")
  .check_common(device, verbose)
  .check_labels_arg(labels)
  options <- .options(options, fn, reserved)
  keys <- .key_columns(options)
  .check_name(object, name)
  query <- .extract(object, assay = assay, columns = keys, what = "query")
  ref <- .resolve_reference(reference, labels, keys, reference.assay)
  if (identical(ref$kind, "model") && !is.null(ref$method) && !identical(ref$method, method)) {
    .abort("The reference is a saved '", ref$method, "' model; ", fn, "() needs a '", method, "' model.",
           class = "pybridge_input_error")
  }
  .check_shared_genes(query, ref)
  # the names this method writes, from its registry record; a clash fails here, before training
  info <- .method_info(method)
  .check_target(object, name, method, .targets(name, info), verbose = verbose)  # says when it replaces results
  .inform(verbose, fn, ": annotating ", length(query$cells), " cells (", length(query$genes), " genes, assay '",
          query$assay, "') with ",
          method, "; reference: ", .describe_reference(ref), ".")
  request <- list(task = "annotate", method = method, labels_key = labels, seed = seed,
                  device = device, verbose = isTRUE(verbose), options = options)
  t_extract <- .now() - t0
  out <- .call_python(request, query = query, reference = if (.is_payload(ref)) ref else ref[c("kind", "path")],
                      verbose = verbose)
  res <- .normalize_result(out)
  params <- c(res$params, list(
    method = method, name = name, `function` = fn, labels = labels, assay = query$assay,
    reference = .describe_reference(ref), options = options,
    r_bridge = c(out$bridge, list(extract_s = t_extract))
  ))
  object <- .store_result(object, res, name = name, method = method, fn = fn, assay = query$assay,
                          cells = query$cells, params = params, call_string = .call_text(call, fn), verbose = verbose,
                          info = info)
  if (isTRUE(verbose) && res$kind == "clustering") {
    .inform(TRUE, fn, ": done in ", .fmt_s(.now() - t0), " (", length(res$cluster_levels), " clusters). Added ",
            paste(names(.result_columns(res, name)), collapse = ", "), ".", type = "done")
  } else if (isTRUE(verbose)) {
    n_un <- sum(res$labels == "Unassigned")
    where <- if (.is_seurat(object)) {
      paste0(", reduction '", name, "', assay 'prediction.score.", name, "'")
    } else {
      paste0(", reducedDim '", toupper(name), "', metadata()$pybridge$", name)
    }
    .inform(TRUE, fn, ": done in ", .fmt_s(.now() - t0), " (", length(res$classes), " classes, mean score ",
            sprintf("%.2f", mean(res$score)), if (n_un) paste0(", ", n_un, " Unassigned"), "). Added predicted.",
            name, ", predicted.", name, ".score", where, ".", type = "done")
  }
  object
}

# The worker behind clustering Run* functions (reference optional).
.run_clustering <- function(object, method, fn, reference = NULL, n.clusters = NULL, labels = NULL, assay = NULL,
                            reference.assay = NULL, name = method, seed = 0, device = "auto", verbose = TRUE,
                            options = list(), reserved = character(), call = NULL, send_labels = TRUE) {
  t0 <- .now()
  seed <- .whole_number(seed, "seed")
  .check_common(device, verbose)
  if (!is.null(labels)) .check_labels_arg(labels)
  n_clusters <- .whole_number(n.clusters, "n.clusters", min = 1, null_ok = TRUE)
  options <- .options(options, fn, reserved)
  keys <- .key_columns(options)
  .check_name(object, name)
  query <- .extract(object, assay = assay, columns = keys, what = "object")
  ref <- NULL
  if (!is.null(reference)) {
    ref <- .resolve_reference(reference, if (is.null(labels)) character() else labels, keys, reference.assay)
    if (identical(ref$kind, "model")) {
      .abort(fn, "() does not take a saved model as reference.", class = "pybridge_input_error")
    }
    .check_shared_genes(query, ref)
  }
  info <- .method_info(method)
  # a method that maps clusters to types writes predicted.<name> only with a labelled reference
  writes <- info
  writes$maps_types <- isTRUE(info$maps_types) && !is.null(ref) && !is.null(labels)
  .check_target(object, name, method, .targets(name, writes), verbose = verbose)
  .inform(verbose, fn, ": clustering ", length(query$cells), " cells (assay '", query$assay, "') with ", method,
          if (!is.null(ref)) paste0("; reference: ", .describe_reference(ref)), ".")
  request <- list(task = "cluster", method = method, seed = seed, device = device,
                  verbose = isTRUE(verbose), options = options, n_clusters = n_clusters)
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
                          cells = query$cells, params = params, call_string = .call_text(call, fn), verbose = verbose,
                          info = info)
  .inform(verbose, fn, ": done in ", .fmt_s(.now() - t0), " (", length(res$cluster_levels), " clusters). Added ",
          paste(names(.result_columns(res, name)), collapse = ", "), ".", type = "done")
  object
}

# The worker behind Train* functions: fit on a reference, save to `path`.
.run_training <- function(reference, method, fn, labels = "cell_type", path = NULL, query = NULL, assay = NULL,
                          query.assay = NULL, seed = 0, device = "auto", verbose = TRUE, options = list(),
                          reserved = character()) {
  t0 <- .now()
  seed <- .whole_number(seed, "seed")
  .check_common(device, verbose)
  .check_labels_arg(labels)
  options <- .options(options, fn, reserved)
  keys <- .key_columns(options)
  ref <- .resolve_reference(reference, labels, keys, assay)
  if (identical(ref$kind, "model")) {
    .abort(fn, "() needs a labelled reference, not a saved model.", class = "pybridge_input_error")
  }
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
  request <- list(task = "train", method = method, labels_key = labels, seed = seed, device = device,
                  verbose = isTRUE(verbose), options = options, path = path)
  out <- .call_python(request, query = q, reference = if (.is_payload(ref)) ref else ref[c("kind", "path")],
                      verbose = verbose)
  model <- .model_from_python(out)
  .inform(verbose, fn, ": saved the ", method, " model (", length(model$classes), " classes, ", model$n_genes,
          " genes) to ", model$path, " in ", .fmt_s(.now() - t0), ".", type = "done")
  model
}
