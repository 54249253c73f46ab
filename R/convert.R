# Object -> Python. Everything here is plain R: it reads a Seurat object or a
# SingleCellExperiment into a "payload" (raw counts as a genes x cells
# dgCMatrix, cell and gene names, and the few metadata columns a method needs)
# that python.R hands to Python in the backend's format:
#   * reticulate: the dgCMatrix as is (it arrives as scipy CSC genes x cells;
#     Python takes .T, a CSR cells x genes matrix, without a copy), names passed
#     explicitly (reticulate drops dimnames), metadata as a data.frame;
#   * rpy2 / anndata2ri: a minimal SingleCellExperiment (counts + those columns).

# ---------------------------------------------------------------- accessors
.is_seurat <- function(x) inherits(x, "Seurat")
.is_sce <- function(x) methods::is(x, "SingleCellExperiment")

.need <- function(pkg, why) {
  if (!requireNamespace(pkg, quietly = TRUE)) {
    .abort("The R package ", pkg, " is needed ", why, "; install it (Debian: r-cran-",
           tolower(pkg), " or r-bioc-", tolower(pkg), ").")
  }
}

.seurat_fun <- function(name) getExportedValue("SeuratObject", name)

# Does this SeuratObject have layers (SeuratObject >= 5: Assay5, LayerData(), Layers())? On Debian bookworm
# (SeuratObject 4.1.3) it has not, and assays are read with the v4 accessors.
.seurat_has_layers <- function() exists("LayerData", envir = asNamespace("SeuratObject"), inherits = FALSE)

# The layers an assay holds: Layers() on SeuratObject >= 5 (Assay5, and v3/v4 assays, whose non-empty slots
# it lists); the non-empty slots of a v4 Assay on SeuratObject 4.
.assay_layers <- function(a) {
  if (.seurat_has_layers()) return(.seurat_fun("Layers")(a))
  slots <- c("counts", "data", "scale.data")
  # (GetAssayData(<Assay>, "counts"): the second argument is `slot` in SeuratObject 4, `layer` in 5)
  filled <- vapply(slots, function(s) {
    m <- .seurat_fun("GetAssayData")(a, s)
    length(dim(m)) == 2L && nrow(m) > 0L && ncol(m) > 0L
  }, logical(1))
  slots[filled]
}

# The layers that `layer` names among `available`: the layer of that name, else the layers split from it
# (`counts.1`, `counts.2`, ... after split() or merge()); several names: exactly those. NULL means "counts".
.pick_layers <- function(available, layer = NULL) {
  want <- layer %||% "counts"
  if (length(want) > 1L) return(if (all(want %in% available)) unique(want) else character())
  if (want %in% available) return(want)
  available[startsWith(available, paste0(want, "."))]
}

# Why the assay's default layers are not raw counts (NULL when they are): an SCTAssay holds corrected counts,
# other assays may hold normalised data only.
.raw_problem <- function(object, assay) {
  a <- object[[assay]]
  if (inherits(a, "SCTAssay")) return("holds SCTransform-corrected values (an SCTAssay), not raw counts")
  layers <- .assay_layers(a)
  if (!length(.pick_layers(layers))) {
    return(paste0("holds no raw counts (no 'counts' layer; layers present: ", .examples(layers), ")"))
  }
  NULL
}

.check_layer_arg <- function(layer, arg) {
  if (!is.null(layer) && (!is.character(layer) || !length(layer) || anyNA(layer) || any(!nzchar(layer)))) {
    .abort("`", arg, "` must be NULL (the 'counts' layer) or the name(s) of the layer(s) with raw counts.",
           class = "pybridge_input_error")
  }
}

# Raw counts of a Seurat assay, on SeuratObject 4 (Assay) and 5 (Assay5 layers, and v3/v4 assays).
# `assay = NULL` is the object's default (active) assay, which need not be "RNA"; when that assay holds no raw
# counts (normalised data only, or an SCTAssay's corrected counts) and `layer` is NULL, the RNA assay's counts
# are read instead, with a message. `layer = NULL` reads the 'counts' layer, or all the layers split from it
# (counts.1, counts.2, ... after split() or merge()), combined in Cells(object) order; the object is not
# changed. `args`: the names of the caller's assay and layer arguments, for the messages.
.seurat_counts <- function(object, assay, what, layer = NULL, verbose = FALSE,
                           args = c(assay = "assay", layer = "layer")) {
  .need("SeuratObject", "for Seurat objects")
  assays <- .seurat_fun("Assays")(object)
  default <- is.null(assay)
  assay <- assay %||% .seurat_fun("DefaultAssay")(object)
  .check_layer_arg(layer, args[["layer"]])
  if (!is.character(assay) || length(assay) != 1L || !assay %in% assays) {
    .abort("Assay '", paste(assay, collapse = "', '"), "' is not in the ", what, "; available assays: ",
           .examples(assays), ". Pass one of them as `", args[["assay"]], "`.", class = "pybridge_input_error")
  }
  if (is.null(layer)) {
    problem <- .raw_problem(object, assay)
    with_counts <- Filter(function(a) is.null(.raw_problem(object, a)), assays)
    if (!is.null(problem) && default && "RNA" %in% with_counts) {
      .inform(verbose, "The default assay '", assay, "' of the ", what, " ", problem, "; reading the raw counts ",
              "of assay 'RNA' instead (pass `", args[["assay"]], " =` to choose another).")
      assay <- "RNA"
    } else if (!is.null(problem)) {
      which <- if (default) paste0(" (`", args[["assay"]], " = NULL` uses the default assay, '", assay, "')") else ""
      .abort("Assay '", assay, "' of the ", what, " ", problem, which, "; pybridge needs raw counts and never ",
             "trains on corrected or log-normalised values. Pass `", args[["assay"]], " =` naming an assay with raw ",
             "counts (assays with a counts layer: ", .examples(with_counts), "), or `", args[["layer"]], " =` naming ",
             "the layer(s) that hold them.", class = "pybridge_input_error")
    }
  }
  available <- .assay_layers(object[[assay]])
  layers <- .pick_layers(available, layer)
  if (!length(layers)) {
    asked <- if (length(layer) > 1L) paste0("the layers ", .examples(setdiff(layer, available))) else
      paste0("layer '", layer %||% "counts", "' (nor layers '", layer %||% "counts", ".*' split from it)")
    .abort("Assay '", assay, "' of the ", what, " has no ", asked, "; its layers: ", .examples(available, 12L),
           ". Pass `", args[["layer"]], " =` naming the layer(s) with raw counts.", class = "pybridge_input_error")
  }
  counts <- if (.seurat_has_layers()) {
    .read_layers(object, assay, layers, what, verbose)
  } else if (length(layers) > 1L) {
    .abort("SeuratObject ", as.character(utils::packageVersion("SeuratObject")), " assays have no split layers: ",
           "pass one `", args[["layer"]], "`.", class = "pybridge_input_error")
  } else {
    .seurat_fun("GetAssayData")(object[[assay]], layers)  # SeuratObject 4: one slot, cells in object order
  }
  if (nrow(counts) == 0L && ncol(object) > 0L) {
    .abort("Assay '", assay, "' of the ", what, " holds no raw counts (its '", paste(layers, collapse = "', '"),
           "' layer is empty); pybridge needs raw counts. Pass `", args[["assay"]], " =` naming an assay with ",
           "counts (assays: ", .examples(assays), ").", class = "pybridge_input_error")
  }
  list(counts = counts, assay = assay, layers = layers)
}

# SeuratObject >= 5: read `layers` of `assay` with LayerData() and put them together as one genes x cells
# matrix: cells in Cells(object) order, genes in the assay's order (those in any of the layers; a layer that
# lacks a gene has zeros there). A single layer that already is in that order is returned as is (no copy).
.read_layers <- function(object, assay, layers, what, verbose = FALSE) {
  mats <- lapply(layers, function(l) .seurat_fun("LayerData")(object, assay = assay, layer = l))
  cells <- colnames(object)
  if (length(mats) == 1L && identical(colnames(mats[[1]]), cells)) return(mats[[1]])
  in_layers <- unique(unlist(lapply(mats, rownames), use.names = FALSE))
  genes <- rownames(object[[assay]])
  genes <- c(genes[genes %in% in_layers], setdiff(in_layers, genes))
  layer_cells <- unlist(lapply(mats, colnames), use.names = FALSE)
  dup <- unique(layer_cells[duplicated(layer_cells)])
  if (length(dup)) {
    .abort("The layers ", .examples(layers), " of assay '", assay, "' of the ", what, " hold the same cells (",
           .examples(dup, 3L), "); name the layers to read with `layer =`.", class = "pybridge_input_error")
  }
  missing <- setdiff(cells, layer_cells)
  if (length(missing)) {
    .abort("The layers ", .examples(layers), " of assay '", assay, "' of the ", what, " hold no counts for ",
           length(missing), " of its ", length(cells), " cells (", .examples(missing, 3L), "); name every layer ",
           "with raw counts in `layer =`, or subset the object to the cells that have them.",
           class = "pybridge_input_error")
  }
  parts <- lapply(mats, function(m) {
    m <- .as_dgc(m, what)
    rows <- match(rownames(m), genes)
    if (identical(rows, seq_along(genes))) return(m)
    # the genes of this layer into the rows of `genes` (zeros for those it lacks); `p` keeps the columns
    Matrix::sparseMatrix(i = rows[m@i + 1L], p = m@p, x = m@x, dims = c(length(genes), ncol(m)),
                         dimnames = list(genes, colnames(m)))
  })
  counts <- if (length(parts) == 1L) parts[[1L]] else do.call(cbind, parts)
  order <- match(cells, colnames(counts))
  if (!identical(order, seq_along(cells))) counts <- counts[, order, drop = FALSE]
  if (length(layers) > 1L) {
    .inform(verbose, "The ", what, "'s counts are split into ", length(layers), " layers of assay '", assay, "' (",
            .examples(layers, 4L), "): read them together as one matrix of ", length(cells), " cells (in the ",
            "object's cell order) and ", length(genes), " genes; the object is not changed (no JoinLayers() ",
            "needed).")
  }
  counts
}

.sce_counts <- function(object, assay, what, layer = NULL, args = c(assay = "assay", layer = "layer")) {
  .need("SummarizedExperiment", "for SingleCellExperiment objects")
  if (!is.null(layer)) {
    .abort("`", args[["layer"]], "` names layers of a Seurat assay; the ", what, " is a SingleCellExperiment: ",
           "name the assay with raw counts with `", args[["assay"]], " =` instead.", class = "pybridge_input_error")
  }
  assay <- assay %||% "counts"
  available <- SummarizedExperiment::assayNames(object)
  if (!is.character(assay) || length(assay) != 1L || !assay %in% available) {
    .abort("Assay '", paste(assay, collapse = "', '"), "' is not in the ", what, "; available assays: ",
           .examples(available), ". pybridge needs raw counts: pass their assay's name as `", args[["assay"]], "`.",
           class = "pybridge_input_error")
  }
  list(counts = SummarizedExperiment::assay(object, assay, withDimnames = TRUE), assay = assay)
}

.metadata <- function(object) {
  if (.is_seurat(object)) object[[]] else SummarizedExperiment::colData(object)
}

# Any matrix-like -> dgCMatrix (never densifies a sparse matrix).
.as_dgc <- function(x, what) {
  if (inherits(x, "dgCMatrix")) return(x)
  if (is.matrix(x) && !is.numeric(x) && !is.logical(x)) {
    .abort("The counts of the ", what, " are not numeric (", typeof(x), ").", class = "pybridge_input_error")
  }
  out <- tryCatch({
    if (is.matrix(x) || inherits(x, "Matrix")) {
      methods::as(methods::as(methods::as(x, "CsparseMatrix"), "generalMatrix"), "dMatrix")
    } else {
      methods::as(x, "dgCMatrix")  # e.g. DelayedArray
    }
  }, error = function(e) {
    .abort("Cannot read the counts of the ", what, " (class ", class(x)[1], ") as a sparse matrix: ",
           conditionMessage(e), class = "pybridge_input_error")
  })
  if (!inherits(out, "dgCMatrix")) out <- methods::as(out, "CsparseMatrix")
  out
}

# ---------------------------------------------------------------- payload
# Read `object` into a payload. `columns`: metadata columns to send (those
# missing are skipped, except `require`, which must exist). `layer`: the Seurat layer(s) with the raw
# counts (see .seurat_counts()); `args`: the caller's names for `assay` and `layer`, for the messages.
.extract <- function(object, assay = NULL, columns = character(), require = character(),
                     what = "query", all_columns = FALSE, layer = NULL, verbose = FALSE,
                     args = c(assay = "assay", layer = "layer")) {
  if (.is_seurat(object)) {
    got <- .seurat_counts(object, assay, what, layer = layer, verbose = verbose, args = args)
  } else if (.is_sce(object)) {
    got <- .sce_counts(object, assay, what, layer = layer, args = args)
  } else {
    .abort("The ", what, " must be a Seurat object or a SingleCellExperiment, not ", .class_text(object), ".",
           class = "pybridge_input_error")
  }
  counts <- got$counts
  if (ncol(counts) == 0L) {
    .abort("The ", what, " has no cells (0 columns); pass a non-empty object.", class = "pybridge_input_error")
  }
  if (nrow(counts) == 0L) {
    .abort("The ", what, " has no genes (0 rows); pass a non-empty object.", class = "pybridge_input_error")
  }
  genes <- rownames(counts)
  if (is.null(genes) || anyNA(genes) || any(!nzchar(genes))) {
    .abort("The ", what, " has no gene names (rownames), or some are empty; pybridge matches genes by name. ",
           "Set rownames() to gene symbols or IDs.", class = "pybridge_input_error")
  }
  dup <- unique(genes[duplicated(genes)])
  if (length(dup)) {
    .abort("The ", what, " has ", length(dup), " duplicated gene names (", .examples(dup), "); pybridge matches ",
           "genes by name. Make them unique first, e.g. rownames(x) <- make.unique(rownames(x)), or sum the ",
           "duplicated rows.", class = "pybridge_input_error")
  }
  cells <- colnames(counts)
  # cell names travel only to put the results back in order: when they are missing or not unique,
  # numbered names are sent instead and the results are stored by position (the object is not renamed)
  send_cells <- if (is.null(cells) || anyNA(cells) || anyDuplicated(cells)) {
    paste0("cell", seq_len(ncol(counts)))
  } else {
    cells
  }
  meta <- .metadata(object)
  for (col in require) {
    if (!col %in% colnames(meta)) {
      where <- if (.is_seurat(object)) "meta.data" else "colData"
      .abort("`labels = \"", col, "\"` is not a column of the ", what, "'s ", where, "; available columns: ",
             .examples(colnames(meta), 12L), ".", class = "pybridge_input_error")
    }
    if (all(is.na(meta[[col]]))) {
      .abort("The ", what, " label column '", col, "' is entirely NA.", class = "pybridge_input_error")
    }
  }
  keep <- if (isTRUE(all_columns)) colnames(meta) else intersect(unique(c(require, columns)), colnames(meta))
  obs <- data.frame(row.names = send_cells)
  for (col in keep) {
    v <- meta[[col]]
    if (!isTRUE(all_columns)) {
      # labels and the *_key columns are names: send them as text ("1", not 1.0), in a factor so that a
      # missing value stays missing (reticulate turns NA in a character vector into the string "NA")
      v <- factor(as.character(v))
    } else if (!is.factor(v) && !is.atomic(v)) {
      next  # list or S4 columns have no AnnData counterpart
    }
    obs[[col]] <- if (is.factor(v)) v else as.vector(v)
  }
  list(
    kind = "payload",
    counts = .as_dgc(counts, what),
    cells = send_cells,
    original_cells = cells,
    genes = as.character(genes),
    obs = obs,
    assay = got$assay,
    layers = got$layers,
    what = what
  )
}

.is_payload <- function(x) is.list(x) && identical(x$kind, "payload")

# For the reticulate backend: the dgCMatrix as is, names explicitly.
.as_matrix_payload <- function(p) {
  list(kind = "matrix", X = p$counts, obs_names = as.list(p$cells), var_names = as.list(p$genes), obs = p$obs)
}

# For anndata2ri: a minimal SingleCellExperiment (counts + the sent columns).
.as_sce <- function(p) {
  .need("SingleCellExperiment", "to hand objects to Python through rpy2/anndata2ri")
  counts <- p$counts
  dimnames(counts) <- list(p$genes, p$cells)
  cd <- S4Vectors::DataFrame(p$obs, check.names = FALSE)
  rownames(cd) <- p$cells
  SingleCellExperiment::SingleCellExperiment(assays = list(counts = counts), colData = cd)
}

# Called from Python (see python.R): keep its name and arguments.
# A SingleCellExperiment for pybridge.r.read_rds(): counts first (anndata2ri makes
# the first assay X), all cell metadata. Seurat objects are read with the same
# accessors as above (v4 and v5).
.for_anndata2ri <- function(object, assay = NULL, what = "object", layer = NULL) {
  if (.is_sce(object)) {
    got <- .sce_counts(object, assay, what, layer = layer)
    assays <- SummarizedExperiment::assays(object)
    keep <- c(got$assay, setdiff(names(assays), got$assay))
    SummarizedExperiment::assays(object) <- assays[keep]
    SummarizedExperiment::assay(object, got$assay) <- .as_dgc(got$counts, what)
    return(object)
  }
  p <- .extract(object, assay = assay, what = what, all_columns = TRUE, layer = layer)
  sce <- .as_sce(p)
  colnames(sce) <- p$original_cells %||% p$cells
  sce
}

# ---------------------------------------------------------------- reference
# Turn `reference` into what Python gets: a payload (objects), or
# list(kind = "h5ad"|"model", path = ).
.resolve_reference <- function(reference, labels, columns, assay = NULL, what = "reference", layer = NULL,
                               verbose = FALSE, args = c(assay = "reference.assay", layer = "reference.layer")) {
  if (missing(reference) || is.null(reference)) {
    .abort("`reference` is missing: pass a labelled Seurat object or SingleCellExperiment, an .h5ad or .rds file, ",
           "or a model directory saved by a Train function.", class = "pybridge_input_error")
  }
  if (inherits(reference, "pybridge_model")) {
    return(list(kind = "model", path = reference$path, method = reference$method))
  }
  if (.is_seurat(reference) || .is_sce(reference)) {
    return(.extract(reference, assay = assay, columns = columns, require = labels, what = what, layer = layer,
                    verbose = verbose, args = args))
  }
  if (is.character(reference) && length(reference) == 1L && !is.na(reference)) {
    path <- path.expand(reference)
    if (dir.exists(path)) {
      if (!file.exists(file.path(path, "pybridge.json"))) {
        .abort("The reference directory ", path, " is not a saved pybridge model (it has no pybridge.json). ",
               "Save one with TrainScNym() or TrainJIND() (`path = `).", class = "pybridge_input_error")
      }
      return(list(kind = "model", path = normalizePath(path)))
    }
    if (!file.exists(path)) {
      .abort("The reference file ", path, " does not exist.", class = "pybridge_input_error")
    }
    if (grepl("[.]rds$", path, ignore.case = TRUE)) {
      return(.resolve_reference(readRDS(path), labels, columns, assay, what, layer, verbose, args))
    }
    if (grepl("[.]h5ad$", path, ignore.case = TRUE)) {
      return(list(kind = "h5ad", path = normalizePath(path)))
    }
    .abort("Cannot use ", path, " as reference: give an .h5ad or .rds file, or a saved model directory.",
           class = "pybridge_input_error")
  }
  .abort("`reference` must be a Seurat object, a SingleCellExperiment, an .h5ad or .rds path, or a saved model ",
         "directory; got ", .class_text(reference), ".", class = "pybridge_input_error")
}

.describe_reference <- function(ref) {
  if (.is_payload(ref)) return(sprintf("object (%d cells, %d genes)", length(ref$cells), length(ref$genes)))
  paste0(ref$kind, ": ", ref$path)
}

.check_shared_genes <- function(query, reference) {
  if (!.is_payload(query) || !.is_payload(reference)) return(invisible(NULL))
  shared <- sum(query$genes %in% reference$genes)
  if (shared == 0L) {
    .abort("The query and the reference have no genes in common (query genes: ", .examples(query$genes, 3L),
           "; reference genes: ", .examples(reference$genes, 3L), "). Both must use the same kind of gene ",
           "names (symbols or Ensembl IDs) and species.", class = "pybridge_input_error")
  }
  invisible(shared)
}

.class_text <- function(x) paste0("an object of class '", paste(class(x), collapse = "/"), "'")
