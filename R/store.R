# Result -> object. Python answers with plain R vectors and matrices (never a
# Python object); these functions write them into the Seurat object or
# SingleCellExperiment under pybridge's names:
#
#   annotation  meta.data/colData  predicted.<name>          factor, classes verbatim (+ "Unassigned")
#                                  predicted.<name>.score    numeric in [0, 1] (top probability)
#                                  predicted.<name>.raw      factor, label before rejection (when rejecting)
#                                  predicted.<name>.<field>  any extra per-cell field ("_" -> "."; RunConsensus:
#                                                            agreement, <member>, <member>.score): numeric, or
#                                                            a factor over the classes for labels
#   clustering  meta.data/colData  <name>.clusters           factor
#                                  <name>.clusters.score     numeric in [0, 1]
#                                  predicted.<name>          factor, mapped cell type (where the method maps)
#                                  predicted.<name>.raw      the mapped type before flagging (field raw_cell_types)
#                                  <name>.<field>            any other extra per-cell field ("_" -> ".")
#   embedding   Seurat: reduction <name>;  SCE: reducedDim(x, toupper(<name>))
#   per-class probabilities (soft cluster assignments)
#               Seurat: assay prediction.score.<name> (cluster.score.<name>), class names verbatim in
#                       the assay's feature metadata column "class" (Seurat turns "_" into "-" in
#                       feature names);
#               SCE: metadata(x)$pybridge[[<name>]]$probabilities (cells x classes, names verbatim)
#   parameters  Seurat: command log entry "<Function>.<name>" (Command(x, "RunScNym.scnym"); from
#                       Python's write_result_rds: "pybridge.write_result_rds.<name>");
#               SCE: metadata(x)$pybridge[[<name>]]$params
#
# Nothing else in the object changes. Results of the same method under the
# same name are replaced; anything else already using one of these names is an
# error, never silently overwritten.

.normalize_result <- function(out) {
  vec <- function(x) if (is.null(x)) NULL else as.vector(x)
  mat <- function(x) {
    if (is.null(x)) return(NULL)
    x <- as.matrix(x)
    storage.mode(x) <- "double"
    dimnames(x) <- NULL
    x
  }
  res <- list(
    kind = vec(out$kind),
    method = vec(out$method),
    cells = as.character(vec(out$cells)),
    score = as.numeric(vec(out$score)),
    probabilities = mat(out$probabilities),
    embedding = mat(out$embedding),
    params = if (is.null(out$params_json)) list() else
      jsonlite::fromJSON(out$params_json, simplifyVector = TRUE, simplifyDataFrame = FALSE, simplifyMatrix = FALSE),
    bridge = out$bridge
  )
  if (identical(res$kind, "annotation")) {
    res$labels <- as.character(vec(out$labels))
    res$raw_labels <- as.character(vec(out$raw_labels))
    res$classes <- as.character(vec(out$classes))
    res$rejection <- isTRUE(as.logical(vec(out$rejection)))
    res$extra <- lapply(out$extra, function(x) as.vector(x))
  } else if (identical(res$kind, "clustering")) {
    res$clusters <- as.character(vec(out$clusters))
    res$cluster_levels <- as.character(vec(out$cluster_levels))
    res$cell_types <- if (is.null(out$cell_types)) NULL else as.character(vec(out$cell_types))
    res$cluster_map <- if (is.null(out$cluster_map_json)) list() else jsonlite::fromJSON(out$cluster_map_json)
    res$extra <- lapply(out$extra, function(x) as.vector(x))
  } else {
    .abort("internal: unknown result kind '", res$kind, "'.")
  }
  n <- length(res$cells)
  if (length(res$score) != n || (!is.null(res$probabilities) && nrow(res$probabilities) != n) ||
      (!is.null(res$embedding) && nrow(res$embedding) != n) || any(lengths(res$extra) != n)) {
    .abort("internal: the result's parts do not have one row per cell.")
  }
  res
}

# ---------------------------------------------------------------- names
# The names a method writes under `name`, from a registry record (see .method_info()) or
# from a result (.result_spec()): `kind`, `maps_types` (a clustering method that also
# writes a mapped cell type) and `extra_fields` (further per-cell fields of the result,
# named by .extra_column()).
.targets <- function(name, info) {
  if (identical(info$kind, "annotation")) {
    columns <- c(paste0("predicted.", name, c("", ".score", ".raw")),
                 vapply(as.character(unlist(info$extra_fields)), .extra_column, "", name = name,
                        kind = "annotation", USE.NAMES = FALSE))
    assay <- paste0("prediction.score.", name)
  } else if (identical(info$kind, "clustering")) {
    columns <- c(paste0(name, ".clusters", c("", ".score")),
                 if (isTRUE(info$maps_types)) paste0("predicted.", name),
                 vapply(as.character(unlist(info$extra_fields)), .extra_column, "", name = name, USE.NAMES = FALSE))
    assay <- paste0("cluster.score.", name)
  } else {
    .abort("internal: unknown method kind '", paste(info$kind, collapse = "', '"), "'.")
  }
  list(columns = unique(columns), assay = assay, reduction = name)
}

# What a result writes, in the terms of a registry record.
.result_spec <- function(res) {
  list(kind = res$kind, maps_types = !is.null(res$cell_types), extra_fields = names(res$extra))
}

.reduced_dim_name <- function(name) toupper(name)

# The method that last wrote results under `name` (NULL when none did).
.previous_writer <- function(object, name) {
  if (.is_seurat(object)) {
    for (cmd in rev(.seurat_fun("Command")(object))) {
      p <- methods::slot(object[[cmd]], "params")
      if (identical(p$pybridge_name, name) && !is.null(p$pybridge_method)) return(p$pybridge_method)
    }
    return(NULL)
  }
  rec <- S4Vectors::metadata(object)$pybridge[[name]]
  if (is.null(rec)) NULL else rec$method
}

# The metadata columns that the results under `name` recorded writing (e.g. the member columns
# of an earlier RunConsensus() with other methods), so that replacing them leaves none behind.
.previous_columns <- function(object, name) {
  if (.is_seurat(object)) {
    cols <- lapply(.seurat_commands_for(object, name),
                   function(cmd) methods::slot(object[[cmd]], "params")$pybridge_columns)
    return(as.character(unlist(cols)))
  }
  as.character(S4Vectors::metadata(object)$pybridge[[name]]$columns)
}

.seurat_commands_for <- function(object, name) {
  Filter(function(cmd) identical(methods::slot(object[[cmd]], "params")$pybridge_name, name),
         .seurat_fun("Command")(object))
}

# Which of the names in `targets` (a .targets() list) are already taken in `object`.
.taken <- function(object, name, targets) {
  taken <- intersect(targets$columns, colnames(.metadata(object)))
  if (.is_seurat(object)) {
    if (targets$assay %in% .seurat_fun("Assays")(object)) taken <- c(taken, paste0("assay '", targets$assay, "'"))
    if (targets$reduction %in% .seurat_fun("Reductions")(object)) {
      taken <- c(taken, paste0("reduction '", targets$reduction, "'"))
    }
  } else {
    rd <- .reduced_dim_name(name)
    if (rd %in% SingleCellExperiment::reducedDimNames(object)) taken <- c(taken, paste0("reducedDim '", rd, "'"))
    if (!is.null(S4Vectors::metadata(object)$pybridge[[name]])) taken <- c(taken, paste0("metadata()$pybridge$", name))
  }
  taken
}

# Is `name` usable as the name of the outputs? (pure R: checked before anything is read)
.check_name <- function(object, name) {
  if (!is.character(name) || length(name) != 1L || is.na(name) || !nzchar(name)) {
    .abort("`name` must be one non-empty string (it names the output columns).", class = "pybridge_input_error")
  }
  if (.is_seurat(object) && !identical(make.names(name), name)) {
    # Seurat would store the results under make.names() of their names, not where pybridge looks for them
    .abort("`name = \"", name, "\"` is not a syntactic R name, which Seurat needs for metadata columns and ",
           "reductions: use letters, digits, '.' and '_' (e.g. \"", make.names(name), "\").",
           class = "pybridge_input_error")
  }
  invisible(name)
}

# Called before computing (with the names from the method's registry record), so that a
# name clash fails before training, and again before storing (with the result's names).
# TRUE: earlier results of the same method under `name` will be replaced.
.check_target <- function(object, name, method, targets, verbose = FALSE) {
  .check_name(object, name)
  taken <- .taken(object, name, targets)
  if (!length(taken)) return(invisible(FALSE))
  prev <- .previous_writer(object, name)
  if (identical(prev, method)) {
    .inform(verbose, "Replacing the earlier ", method, " results stored under name '", name, "'.")
    return(invisible(TRUE))
  }
  who <- if (is.null(prev)) "not by pybridge" else paste0("by pybridge's ", prev)
  .abort("The object already has ", paste(taken, collapse = ", "), " (written ", who, "). ",
         "pybridge does not overwrite another method's results: pass another `name =`, or remove them first.",
         class = "pybridge_input_error")
}

# Seurat stores command logs under syntactic names
.command_name <- function(fn, name) make.names(paste0(fn, ".", name))

.embedding_key <- function(name) {
  key <- gsub("[^A-Za-z0-9]", "", name)
  if (!nzchar(key) || grepl("^[0-9]", key)) key <- paste0("PB", key)
  paste0(key, "_")
}

# ---------------------------------------------------------------- store
# `info`: the method's registry record, when known; replacing earlier results of the
# method then also drops the columns it wrote that this result does not (e.g.
# predicted.<name> of an earlier NMF transfer run with reference labels).
.store_result <- function(object, res, name, method, fn, assay, cells, params, call_string, verbose = FALSE,
                          info = NULL) {
  if (!identical(res$cells, cells)) {
    .abort("internal: the result's cells are not the object's cells in the same order.")
  }
  cols <- .result_columns(res, name)
  writes <- .targets(name, .result_spec(res))
  writes$columns <- unique(c(writes$columns, names(cols)))
  replace <- .check_target(object, name, method, writes, verbose = FALSE)
  if (isTRUE(replace)) {
    # without a record, everything a result of this kind can write
    before <- info %||% list(kind = res$kind, maps_types = TRUE, extra_fields = names(res$extra))
    object <- .drop_columns(object, unique(c(.targets(name, before)$columns, writes$columns,
                                             .previous_columns(object, name))))
  }
  if (.is_seurat(object)) {
    .store_seurat(object, res, cols, name, method, fn, assay, params, call_string)
  } else {
    .store_sce(object, res, cols, name, method, fn, params, call_string)
  }
}

.result_columns <- function(res, name) {
  if (res$kind == "annotation") {
    levels <- res$classes
    if (res$rejection || any(!res$labels %in% levels)) levels <- unique(c(levels, setdiff(res$labels, levels)))
    cols <- list()
    cols[[paste0("predicted.", name)]] <- factor(res$labels, levels = levels)
    cols[[paste0("predicted.", name, ".score")]] <- res$score
    if (res$rejection) cols[[paste0("predicted.", name, ".raw")]] <- factor(res$raw_labels, levels = res$classes)
    for (field in names(res$extra)) {
      v <- res$extra[[field]]
      if (is.character(v)) v <- factor(v, levels = unique(c(res$classes, setdiff(v, res$classes))))
      cols[[.extra_column(name, field, kind = "annotation")]] <- v
    }
  } else {
    cols <- list()
    cols[[paste0(name, ".clusters")]] <- factor(res$clusters, levels = res$cluster_levels)
    cols[[paste0(name, ".clusters.score")]] <- res$score
    if (!is.null(res$cell_types)) {
      cols[[paste0("predicted.", name)]] <- factor(res$cell_types, levels = sort(unique(res$cell_types)))
    }
    for (field in names(res$extra)) cols[[.extra_column(name, field)]] <- res$extra[[field]]
  }
  cols
}

# Extra per-cell outputs of a clustering method: the mapped type before flagging
# is predicted.<name>.raw (as for classifiers), anything else <name>.<field>; of an
# annotation (RunConsensus's agreement and members): predicted.<name>.<field>.
.extra_column <- function(name, field, kind = "clustering") {
  if (identical(kind, "annotation")) return(paste0("predicted.", name, ".", gsub("_", ".", field, fixed = TRUE)))
  if (field == "raw_cell_types") return(paste0("predicted.", name, ".raw"))
  paste0(name, ".", gsub("_", ".", field, fixed = TRUE))
}

.drop_columns <- function(object, columns) {
  for (col in intersect(columns, colnames(.metadata(object)))) object[[col]] <- NULL
  object
}

.probability_names <- function(res) {
  if (res$kind == "annotation") res$classes else res$cluster_levels[seq_len(ncol(res$probabilities))]
}

.store_seurat <- function(object, res, cols, name, method, fn, assay, params, call_string) {
  cells <- colnames(object)
  md <- data.frame(row.names = cells)
  for (col in names(cols)) md[[col]] <- cols[[col]]
  object <- .seurat_fun("AddMetaData")(object, metadata = md)
  t <- .targets(name, .result_spec(res))
  if (!is.null(res$embedding)) {
    emb <- res$embedding
    key <- .embedding_key(name)
    dimnames(emb) <- list(cells, paste0(key, seq_len(ncol(emb))))
    object[[t$reduction]] <- .seurat_fun("CreateDimReducObject")(embeddings = emb, key = key, assay = assay)
  }
  if (!is.null(res$probabilities)) {
    classes <- .probability_names(res)
    features <- make.unique(gsub("_", "-", classes, fixed = TRUE))
    scores <- t(res$probabilities)
    dimnames(scores) <- list(features, cells)
    a <- .seurat_fun("CreateAssayObject")(data = scores)
    a <- .seurat_fun("Key<-")(a, value = .embedding_key(t$assay))
    a <- .seurat_fun("AddMetaData")(a, metadata = data.frame(class = classes, row.names = features))
    object <- .add_score_assay(object, t$assay, a)
  }
  for (old in .seurat_commands_for(object, name)) object[[old]] <- NULL
  cmd_name <- .command_name(fn, name)
  params$pybridge_name <- name
  params$pybridge_method <- method
  params$pybridge_columns <- names(cols)
  cmd <- methods::new(methods::getClass("SeuratCommand", where = asNamespace("SeuratObject")),
                      name = cmd_name, time.stamp = Sys.time(), assay.used = assay,
                      call.string = call_string, params = params)
  object[[cmd_name]] <- cmd
  object
}

# Add the per-class scores as an assay of normalised values only (as Seurat's TransferData() does, a v3/v4
# Assay). SeuratObject >= 5 then looks for a 'counts' layer to compute nCount/nFeature and warns that it is
# missing ("Layer counts isn't present in the assay ...", "No layers found matching search pattern ..."):
# about pybridge's own assay, not the user's data, so those two warnings (only) are muffled here.
.add_score_assay <- function(object, name, assay) {
  withCallingHandlers(
    object[[name]] <- assay,
    warning = function(w) {
      if (grepl("^Layer counts isn't present in the assay|^No layers found matching search pattern",
                conditionMessage(w))) {
        invokeRestart("muffleWarning")
      }
    }
  )
  object
}

.store_sce <- function(object, res, cols, name, method, fn, params, call_string) {
  for (col in names(cols)) object[[col]] <- cols[[col]]
  if (!is.null(res$embedding)) {
    emb <- res$embedding
    dimnames(emb) <- list(colnames(object), paste0(toupper(name), seq_len(ncol(emb))))
    SingleCellExperiment::reducedDim(object, .reduced_dim_name(name)) <- emb
  }
  probs <- res$probabilities
  if (!is.null(probs)) dimnames(probs) <- list(colnames(object), .probability_names(res))
  md <- S4Vectors::metadata(object)
  if (is.null(md$pybridge)) md$pybridge <- list()
  md$pybridge[[name]] <- list(
    method = method,
    kind = res$kind,
    columns = names(cols),
    `function` = fn,
    classes = if (res$kind == "annotation") res$classes else NULL,
    cluster_map = if (res$kind == "clustering") res$cluster_map else NULL,
    probabilities = probs,
    params = params,
    call = call_string,
    time = Sys.time()
  )
  S4Vectors::metadata(object) <- md
  object
}

# Called from Python (see python.R): keep its name and arguments.
# Used by pybridge.r.write_result_rds() (Python hosts R): store a result that
# Python computed on this object (read with pybridge.r.read_rds()).
.store_from_python <- function(object, res, name, fn = "pybridge.write_result_rds") {
  if (!.is_seurat(object) && !.is_sce(object)) {
    .abort("The .rds file holds ", .class_text(object), ", not a Seurat object or SingleCellExperiment.")
  }
  res <- .normalize_result(res)
  cells <- colnames(object)
  if (is.null(cells) || anyDuplicated(cells)) {
    if (length(res$cells) != ncol(object)) {
      .abort("The result has ", length(res$cells), " cells, the object ", ncol(object), ".")
    }
    cells <- res$cells
  }
  if (!identical(res$cells, cells)) {
    .abort("The result was computed for other cells than this object holds (", length(res$cells), " vs ",
           ncol(object), " cells, or another order); write it into the object it came from.")
  }
  assay <- if (.is_seurat(object)) .seurat_fun("DefaultAssay")(object) else NULL
  params <- c(res$params, list(method = res$method, name = name, `function` = fn))
  .store_result(object, res, name = name, method = res$method, fn = fn, assay = assay, cells = res$cells,
                params = params, call_string = fn)
}
