# Shared, seeded setup: a small real dataset (panc8_small, shipped in inst/extdata),
# leave-one-technology-out (query: inDrop, reference: the other four technologies),
# as Seurat objects and SingleCellExperiments, and one RunScNym run of each that
# several test files inspect. Few epochs keep the suite fast; accuracy is still
# checked against the known labels.
suppressPackageStartupMessages({
  library(SeuratObject)
  library(SingleCellExperiment)
})

EPOCHS <- 15L
demo <- readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge", mustWork = TRUE))
seu_query <- subset(demo, tech == "indrop")
seu_ref <- subset(demo, tech != "indrop")

as_sce <- function(seu) {
  SingleCellExperiment(
    assays = list(counts = GetAssayData(seu, slot = "counts")),
    colData = S4Vectors::DataFrame(seu[[]], check.names = FALSE)
  )
}
sce_query <- as_sce(seu_query)
sce_ref <- as_sce(seu_ref)
truth <- as.character(seu_query$cell_type)
ref_classes <- sort(unique(as.character(seu_ref$cell_type)))

have_python <- function() {
  py <- pybridge_python()
  !is.na(py$python) && file.exists(py$python)
}
skip_if_no_python <- function() {
  if (!have_python()) skip("no Python environment for pybridge (set PYBRIDGE_PYTHON)")
}

# computed once, inspected by several tests
run_once <- local({
  cache <- list()
  function(key, expr) {
    if (is.null(cache[[key]])) cache[[key]] <<- force(expr)
    cache[[key]]
  }
})
seurat_result <- function() {
  run_once("seurat", RunScNym(seu_query, seu_ref, n_epochs = EPOCHS, device = "cpu", verbose = FALSE))
}
sce_result <- function() {
  run_once("sce", RunScNym(sce_query, sce_ref, n_epochs = EPOCHS, device = "cpu", verbose = FALSE))
}
model_dir <- file.path(tempdir(), "pybridge-test-model")
trained_model <- function() {
  run_once("model", TrainScNym(seu_ref, path = model_dir, n_epochs = EPOCHS, device = "cpu", verbose = FALSE))
}

# The input object with pybridge's outputs under `name` taken out (test-only slot access).
strip_seurat <- function(x, name = "scnym", fn = "RunScNym") {
  md <- x@meta.data
  x@meta.data <- md[, !colnames(md) %in% paste0("predicted.", name, c("", ".score", ".raw")), drop = FALSE]
  x@reductions[[name]] <- NULL
  x@assays[[paste0("prediction.score.", name)]] <- NULL
  x@commands[[paste0(fn, ".", name)]] <- NULL
  # removing the last element of a list leaves an empty *named* list; the input had none
  if (!length(x@reductions)) names(x@reductions) <- NULL
  if (!length(x@commands)) names(x@commands) <- NULL
  x
}
strip_sce <- function(x, name = "scnym") {
  for (col in intersect(paste0("predicted.", name, c("", ".score", ".raw")), colnames(colData(x)))) x[[col]] <- NULL
  reducedDim(x, toupper(name)) <- NULL
  md <- S4Vectors::metadata(x)
  md$pybridge[[name]] <- NULL
  if (!length(md$pybridge)) md$pybridge <- NULL
  S4Vectors::metadata(x) <- md
  x
}

accuracy <- function(pred, truth) mean(as.character(pred) == as.character(truth))
