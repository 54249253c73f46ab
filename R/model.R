# The saved model as R sees it: a "pybridge_model", a plain list pointing at a
# model directory (weights in safetensors, metadata in pybridge.json) that a
# Train* function wrote or Python's model.save() did. It is usable as
# `reference` in the Run* functions; R never holds the model itself.

.new_model <- function(path, method, classes, n_genes, params = list()) {
  structure(list(path = path, method = method, classes = as.character(classes), n_genes = as.integer(n_genes),
                 params = params),
            class = "pybridge_model")
}

# From Python's answer to a "train" request.
.model_from_python <- function(out) {
  .new_model(path = as.character(out$path), method = as.character(out$method),
             classes = as.vector(out$classes), n_genes = out$n_genes,
             params = jsonlite::fromJSON(out$params_json, simplifyVector = TRUE, simplifyDataFrame = FALSE,
                                         simplifyMatrix = FALSE))
}

#' Open a saved pybridge model directory
#'
#' Reads the metadata of a model directory (it does not load the model or
#' start Python) and returns the object that [TrainScNym()] and [TrainJIND()]
#' return, to pass as `reference` to [RunScNym()] or [RunJIND()].
#'
#' @param path A directory written by [TrainScNym()], [TrainJIND()] (or `model.save()` in Python).
#' @return A `pybridge_model`: a list with the model's `path`, `method`,
#'   `classes`, `n_genes` and `params` (its configuration and seed).
#' @seealso [TrainScNym()], [TrainJIND()]
#' @examples
#' # a directory that holds no model is refused with a message saying so
#' try(read_pybridge_model(tempdir()))
#' \donttest{
#' if (file.exists(pybridge_python()$python) && requireNamespace("SeuratObject", quietly = TRUE)) {
#'   ref <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge"))
#'   path <- file.path(tempdir(), "scnym-model")
#'   TrainScNym(ref, labels = "cell_type", path = path, n_epochs = 5, verbose = FALSE)
#'   model <- read_pybridge_model(path)
#'   model
#' }
#' }
#' @export
read_pybridge_model <- function(path) {
  meta_file <- file.path(path.expand(path), "pybridge.json")
  if (!file.exists(meta_file)) {
    .abort(path, " is not a saved pybridge model (it has no pybridge.json).", class = "pybridge_input_error")
  }
  meta <- jsonlite::fromJSON(meta_file, simplifyVector = TRUE, simplifyDataFrame = FALSE, simplifyMatrix = FALSE)
  .new_model(path = normalizePath(path), method = meta$method, classes = meta$classes, n_genes = length(meta$genes),
             params = list(config = meta$config, seed = meta$seed))
}

#' @export
print.pybridge_model <- function(x, ...) {
  cat(sprintf("<pybridge %s model: %d classes, %d genes>\n  path: %s\n  classes: %s\n", x$method,
              length(x$classes), x$n_genes, x$path, .examples(x$classes, 8L)))
  invisible(x)
}
