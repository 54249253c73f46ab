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

# Raw counts of a Seurat assay, on Seurat v4 (Assay) and v5 (Assay5 layers). `assay = NULL` is the
# object's default (active) assay, which need not be "RNA". The LayerData() branch is for SeuratObject >= 5
# (Assay5); it is written against the documented v5 API but untested here, where Debian ships
# SeuratObject 4.1.3 (no Assay5 class). Split layers (counts.1, counts.2, ...) are refused, not joined.
.seurat_counts <- function(object, assay, what) {
  .need("SeuratObject", "for Seurat objects")
  assays <- .seurat_fun("Assays")(object)
  default <- is.null(assay)
  assay <- assay %||% .seurat_fun("DefaultAssay")(object)
  which <- if (default) paste0(" (`assay = NULL` uses the default assay, '", assay, "')") else ""
  if (!is.character(assay) || length(assay) != 1L || !assay %in% assays) {
    .abort("Assay '", paste(assay, collapse = "', '"), "' is not in the ", what, "; available assays: ",
           .examples(assays), ". Pass one of them as `assay`.", class = "pybridge_input_error")
  }
  ns <- asNamespace("SeuratObject")
  if (exists("LayerData", envir = ns, inherits = FALSE)) {
    # SeuratObject >= 5: counts may be split into layers (counts.1, counts.2, ...)
    layers <- .seurat_fun("Layers")(object[[assay]])
    if (!"counts" %in% layers) {
      split <- grep("^counts[.]", layers, value = TRUE)
      if (length(split)) {
        .abort("The counts of assay '", assay, "' in the ", what, " are split into layers (",
               .examples(split), "); join them first with `object <- JoinLayers(object)`.",
               class = "pybridge_input_error")
      }
      .abort("Assay '", assay, "' of the ", what, " has no 'counts' layer", which, "; pybridge needs raw counts ",
             "(layers present: ", .examples(layers), "). Pass `assay =` naming an assay with counts (assays: ",
             .examples(assays), ").", class = "pybridge_input_error")
    }
    counts <- .seurat_fun("LayerData")(object, assay = assay, layer = "counts")
  } else {
    counts <- .seurat_fun("GetAssayData")(object, slot = "counts", assay = assay)
  }
  if (nrow(counts) == 0L && ncol(object) > 0L) {
    .abort("Assay '", assay, "' of the ", what, " holds no raw counts (its counts slot is empty, e.g. it was made ",
           "from normalised data only)", which, "; pybridge needs raw counts. Pass `assay =` naming an assay with ",
           "counts (assays: ", .examples(assays), ").", class = "pybridge_input_error")
  }
  list(counts = counts, assay = assay)
}

.sce_counts <- function(object, assay, what) {
  .need("SummarizedExperiment", "for SingleCellExperiment objects")
  assay <- assay %||% "counts"
  available <- SummarizedExperiment::assayNames(object)
  if (!is.character(assay) || length(assay) != 1L || !assay %in% available) {
    .abort("Assay '", paste(assay, collapse = "', '"), "' is not in the ", what, "; available assays: ",
           .examples(available), ". pybridge needs raw counts: pass their assay's name as `assay`.",
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
# missing are skipped, except `require`, which must exist).
.extract <- function(object, assay = NULL, columns = character(), require = character(),
                     what = "query", all_columns = FALSE) {
  if (.is_seurat(object)) {
    got <- .seurat_counts(object, assay, what)
  } else if (.is_sce(object)) {
    got <- .sce_counts(object, assay, what)
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
.for_anndata2ri <- function(object, assay = NULL, what = "object") {
  if (.is_sce(object)) {
    got <- .sce_counts(object, assay, what)
    assays <- SummarizedExperiment::assays(object)
    keep <- c(got$assay, setdiff(names(assays), got$assay))
    SummarizedExperiment::assays(object) <- assays[keep]
    SummarizedExperiment::assay(object, got$assay) <- .as_dgc(got$counts, what)
    return(object)
  }
  p <- .extract(object, assay = assay, what = what, all_columns = TRUE)
  sce <- .as_sce(p)
  colnames(sce) <- p$original_cells %||% p$cells
  sce
}

# ---------------------------------------------------------------- reference
# Turn `reference` into what Python gets: a payload (objects), or
# list(kind = "h5ad"|"model", path = ).
.resolve_reference <- function(reference, labels, columns, assay = NULL, what = "reference") {
  if (missing(reference) || is.null(reference)) {
    .abort("`reference` is missing: pass a labelled Seurat object or SingleCellExperiment, an .h5ad or .rds file, ",
           "or a model directory saved by a Train function.", class = "pybridge_input_error")
  }
  if (inherits(reference, "pybridge_model")) {
    return(list(kind = "model", path = reference$path, method = reference$method))
  }
  if (.is_seurat(reference) || .is_sce(reference)) {
    return(.extract(reference, assay = assay, columns = columns, require = labels, what = what))
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
      return(.resolve_reference(readRDS(path), labels, columns, assay, what))
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
