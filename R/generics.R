# S3 generics of the Run* functions (their Seurat and SingleCellExperiment
# methods are in RunScNym.R etc.), the map between R functions and Python
# method names, and the method registry as R sees it (pybridge_methods()).
# The workers behind the methods are in run.R, the saved model class in model.R.

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

#' @rdname RunLinear
#' @export
RunLinear <- function(object, ...) UseMethod("RunLinear")

#' @rdname RunLinear
#' @export
RunLinear.default <- function(object, ...) .no_method("RunLinear", object)

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

#' @rdname RunConsensus
#' @export
RunConsensus <- function(object, ...) UseMethod("RunConsensus")

#' @rdname RunConsensus
#' @export
RunConsensus.default <- function(object, ...) {
  # (no registered method, so not in .python_names: the Python function is pybridge.consensus())
  .abort("RunConsensus() works on a Seurat object or a SingleCellExperiment, not on ", .class_text(object), ". ",
         "For an AnnData object use the Python package (pybridge.consensus()).", class = "pybridge_input_error")
}

# R entry point -> Python method name (the registry key).
.python_names <- list(RunScNym = "scnym", RunJIND = "jind", RunLinear = "linear", RunItClust = "itclust",
                      RunCICL = "cicl", RunNMFTransfer = "nmf_transfer")

.no_method <- function(fn, object) {
  .abort(fn, "() works on a Seurat object or a SingleCellExperiment, not on ", .class_text(object), ". ",
         "For an AnnData object use the Python package (pybridge.", .python_names[[fn]], "()).",
         class = "pybridge_input_error")
}

#' The methods the Python side offers
#'
#' Lists the methods registered in the Python package pybridge, as its method
#' registry describes them. Needs pybridge's Python environment (see
#' [use_pybridge()]).
#'
#' @return A data.frame with one row per method and the columns
#' * `name`: the method's name in Python (`pybridge.<name>()`) and the
#'   default `name` of its outputs in R;
#' * `kind`: `"annotation"` (labels cells with a reference's cell types) or
#'   `"clustering"` (clusters cells, and may map the clusters to a
#'   reference's types);
#' * `reference`: whether the method needs a labelled reference
#'   (`"required"`), can use one (`"optional"`) or takes none (`"none"`);
#' * `trainable`: whether the R package has a `Train*` function for it (a
#'   model trained once and saved, then applied to many queries).
#' @seealso [RunScNym()], [TrainScNym()]
#' @examples
#' \donttest{
#' if (file.exists(pybridge_python()$python)) {
#'   pybridge_methods()
#' }
#' }
#' @export
pybridge_methods <- function() {
  info <- .methods_table(refresh = TRUE)
  data.frame(name = info$name, kind = info$kind, reference = info$reference, trainable = info$trainable,
             stringsAsFactors = FALSE)
}

# The registry as R keeps it: a data.frame with name, kind, reference, maps_types,
# extra_fields (a list column of character vectors) and trainable. Python's
# run_from_r(list(task = "methods")) answers with equal-length vectors; extra_fields
# is one comma-separated string per method. Read once per session (the registry
# does not change while Python runs), or again with refresh = TRUE.
.methods_table <- function(refresh = FALSE) {
  if (!isTRUE(refresh) && !is.null(.pybridge$methods)) return(.pybridge$methods)
  out <- .call_python(list(task = "methods"), verbose = FALSE)
  .pybridge$methods <- .parse_methods(out)
  .pybridge$methods
}

.parse_methods <- function(out) {
  fields <- c("name", "kind", "reference", "maps_types", "extra_fields")
  missing <- setdiff(fields, names(out))
  if (length(missing)) {
    .abort("The Python side answered the method list without ", paste(missing, collapse = ", "),
           ": its pybridge is older than this R package. Reinstall it with pybridge::install_pybridge().",
           class = "pybridge_python_error")
  }
  name <- as.character(as.vector(out$name))
  extra <- as.character(as.vector(out$extra_fields))
  if (any(lengths(lapply(out[fields], as.vector)) != length(name))) {
    .abort("internal: the Python side's method list has fields of different lengths.")
  }
  info <- data.frame(name = name, kind = as.character(as.vector(out$kind)),
                     reference = as.character(as.vector(out$reference)),
                     maps_types = as.logical(as.vector(out$maps_types)), stringsAsFactors = FALSE)
  info$extra_fields <- lapply(strsplit(extra, ",", fixed = TRUE), function(f) {
    f <- trimws(f)
    f[nzchar(f)]
  })
  info$trainable <- .has_train_function(name)
  info
}

# Whether the R package exports a Train* function for each Python method name:
# RunScNym <-> "scnym" in .python_names, so "scnym" is trainable when TrainScNym is exported.
.has_train_function <- function(methods) {
  run_fns <- names(.python_names)[match(methods, unlist(.python_names))]
  train_fns <- sub("^Run", "Train", run_fns)
  !is.na(run_fns) & train_fns %in% getNamespaceExports("pybridge")
}

# The registry record of one method, as a list (kind, reference, maps_types, extra_fields ...).
.method_info <- function(method) {
  info <- .methods_table()
  i <- match(method, info$name)
  if (is.na(i)) {
    .abort("The Python side has no method '", method, "' (it has ", .examples(info$name), "): its pybridge ",
           "does not match this R package. Reinstall it with pybridge::install_pybridge().",
           class = "pybridge_python_error")
  }
  rec <- as.list(info[i, setdiff(names(info), "extra_fields")])
  rec$extra_fields <- info$extra_fields[[i]]
  rec
}
