# The workers behind every Run* and Train* function, and the checks and option
# handling they share:
#   .run_annotation()  reference-based methods (RunScNym, RunJIND, RunItClust, RunConsensus)
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
# (Python's `layer` names an AnnData layer; R sends the counts that its `assay` and `layer` arguments choose.)
.option_args <- c(labels_key = "labels", n_clusters = "n.clusters", key_added = "name", layer = "layer",
                  reference_layer = "reference.layer", query_layer = "query.layer", seed = "seed",
                  device = "device", verbose = "verbose")

# The layer arguments of a Run*/Train* function without formals for them (they are then in `...`; the
# workers read them for every method): list(value, options without it). `name`: the R name.
.pop_option <- function(options, name, value = NULL) {
  if (!is.null(value) || !name %in% names(options)) return(list(value = value, options = options))
  list(value = options[[name]], options = options[names(options) != name])
}

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

# Metadata columns named by *_key options (e.g. domain_key = "batch") travel with the data; also those
# in option lists within the options (RunConsensus's per-member options).
.key_columns <- function(options) {
  keys <- options[grepl("_key$", names(options))]
  nested <- unlist(lapply(Filter(is.list, options), .key_columns), use.names = FALSE)
  unique(c(unlist(Filter(function(v) is.character(v) && length(v) == 1L, keys), use.names = FALSE), nested))
}

# ---------------------------------------------------------------- workers
# The worker behind every reference-based Run* function. `info`: the method's record (kind,
# extra_fields ...; see .method_info()) where the registry has none (RunConsensus), with
# `saved_model = FALSE` for a method that cannot use a saved model; `sent`: options already checked by
# the caller, sent as they are (they may hold lists, which `options` may not).
.run_annotation <- function(object, reference, method, fn, labels = "cell_type", assay = NULL,
                            reference.assay = NULL, name = method, seed = 0, device = "auto", verbose = TRUE,
                            options = list(), reserved = character(), call = NULL, layer = NULL,
                            reference.layer = NULL, info = NULL, sent = list()) {
  t0 <- .now()
  seed <- .whole_number(seed, "seed")
  .check_common(device, verbose)
  .check_labels_arg(labels)
  got <- .pop_option(options, "layer", layer)
  layer <- got$value
  got <- .pop_option(got$options, "reference.layer", reference.layer)
  reference.layer <- got$value
  options <- c(.options(got$options, fn, c(reserved, "layer", "reference.layer")), sent)
  keys <- .key_columns(options)
  .check_name(object, name)
  query <- .extract(object, assay = assay, columns = keys, what = "query", layer = layer, verbose = verbose)
  ref <- .resolve_reference(reference, labels, keys, reference.assay, layer = reference.layer, verbose = verbose)
  if (identical(ref$kind, "model") && isFALSE(info$saved_model)) {
    .abort(fn, "() trains on a labelled reference; it cannot use a saved model.", class = "pybridge_input_error")
  }
  if (identical(ref$kind, "model") && !is.null(ref$method) && !identical(ref$method, method)) {
    .abort("The reference is a saved '", ref$method, "' model; ", fn, "() needs a '", method, "' model.",
           class = "pybridge_input_error")
  }
  .check_shared_genes(query, ref)
  # the names this method writes, from its registry record; a clash fails here, before training
  info <- info %||% .method_info(method)
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
  params$layer <- query$layers  # the Seurat layers read (NULL, i.e. left out, for other objects)
  params$reference.layer <- ref$layers
  object <- .store_result(object, res, name = name, method = method, fn = fn, assay = query$assay,
                          cells = query$cells, params = params, call_string = .call_text(call, fn), verbose = verbose,
                          info = info)
  if (isTRUE(verbose) && res$kind == "clustering") {
    .inform(TRUE, fn, ": done in ", .fmt_s(.now() - t0), " (", length(res$cluster_levels), " clusters). Added ",
            paste(names(.result_columns(res, name)), collapse = ", "), ".", type = "done")
  } else if (isTRUE(verbose)) {
    n_un <- sum(res$labels == "Unassigned")
    emb <- !is.null(res$embedding)
    where <- if (.is_seurat(object)) {
      c(if (emb) paste0("reduction '", name, "'"), paste0("assay 'prediction.score.", name, "'"))
    } else {
      c(if (emb) paste0("reducedDim '", toupper(name), "'"), paste0("metadata()$pybridge$", name))
    }
    .inform(TRUE, fn, ": done in ", .fmt_s(.now() - t0), " (", length(res$classes), " classes, mean score ",
            sprintf("%.2f", mean(res$score)), if (n_un) paste0(", ", n_un, " Unassigned"), "). Added ",
            paste(c(names(.result_columns(res, name)), where), collapse = ", "), ".", type = "done")
  }
  object
}

# The worker behind clustering Run* functions (reference optional).
.run_clustering <- function(object, method, fn, reference = NULL, n.clusters = NULL, labels = NULL, assay = NULL,
                            reference.assay = NULL, name = method, seed = 0, device = "auto", verbose = TRUE,
                            options = list(), reserved = character(), call = NULL, send_labels = TRUE,
                            layer = NULL, reference.layer = NULL) {
  t0 <- .now()
  seed <- .whole_number(seed, "seed")
  .check_common(device, verbose)
  if (!is.null(labels)) .check_labels_arg(labels)
  n_clusters <- .whole_number(n.clusters, "n.clusters", min = 1, null_ok = TRUE)
  got <- .pop_option(options, "layer", layer)
  layer <- got$value
  got <- .pop_option(got$options, "reference.layer", reference.layer)
  reference.layer <- got$value
  options <- .options(got$options, fn, c(reserved, "layer", "reference.layer"))
  keys <- .key_columns(options)
  .check_name(object, name)
  query <- .extract(object, assay = assay, columns = keys, what = "object", layer = layer, verbose = verbose)
  ref <- NULL
  if (!is.null(reference)) {
    ref <- .resolve_reference(reference, if (is.null(labels)) character() else labels, keys, reference.assay,
                              layer = reference.layer, verbose = verbose)
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
  params$layer <- query$layers
  params$reference.layer <- ref$layers
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
                          reserved = character(), layer = NULL, query.layer = NULL) {
  t0 <- .now()
  seed <- .whole_number(seed, "seed")
  .check_common(device, verbose)
  .check_labels_arg(labels)
  got <- .pop_option(options, "layer", layer)
  layer <- got$value
  got <- .pop_option(got$options, "query.layer", query.layer)
  query.layer <- got$value
  options <- .options(got$options, fn, c(reserved, "layer", "query.layer"))
  keys <- .key_columns(options)
  # here the reference is the main object: its arguments are `assay` and `layer`
  ref <- .resolve_reference(reference, labels, keys, assay, layer = layer, verbose = verbose,
                            args = c(assay = "assay", layer = "layer"))
  if (identical(ref$kind, "model")) {
    .abort(fn, "() needs a labelled reference, not a saved model.", class = "pybridge_input_error")
  }
  q <- NULL
  if (!is.null(query)) {
    q <- .extract(query, assay = query.assay, columns = keys, what = "query", layer = query.layer, verbose = verbose,
                  args = c(assay = "query.assay", layer = "query.layer"))
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
