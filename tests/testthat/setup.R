# Shared, seeded setup: a small real dataset (panc8_small, shipped in inst/extdata),
# leave-one-technology-out (query: inDrop, reference: the other four technologies),
# as Seurat objects and SingleCellExperiments, and one RunScNym run of each that
# several test files inspect. Few epochs keep the suite fast; accuracy is still
# checked against the known labels.
#
# The objects need suggested packages. Without them this file builds nothing,
# and each test file that uses the objects skips itself (skip_if_no_objects() at
# its top); tests that run Python call skip_if_no_python().

objects_need <- c("SeuratObject", "SingleCellExperiment", "SummarizedExperiment", "S4Vectors", "withr")
have_objects <- all(vapply(objects_need, requireNamespace, logical(1), quietly = TRUE))
skip_if_no_objects <- function() {
  for (pkg in objects_need) testthat::skip_if_not_installed(pkg)
}

EPOCHS <- 15L
# SeuratObject >= 5 (Seurat 5: layers, LayerData()); Debian bookworm has 4.1.3, the trixie lane 5.0.x
seurat_v5 <- have_objects && utils::packageVersion("SeuratObject") >= "5.0.0"
# A layer (SeuratObject 5) or slot (4) of an assay (default: the default assay), without the `slot =` that
# SeuratObject 5 deprecates (in SeuratObject 4 the second argument of GetAssayData(<Assay>) is `slot`)
layer_of <- function(seu, layer = "counts", assay = NULL) {
  if (is.null(assay)) assay <- SeuratObject::DefaultAssay(seu)
  if (seurat_v5) return(SeuratObject::LayerData(seu, assay = assay, layer = layer))
  SeuratObject::GetAssayData(seu[[assay]], layer)
}
counts_of <- function(seu) layer_of(seu, "counts")
as_sce <- function(seu) {
  SingleCellExperiment::SingleCellExperiment(
    assays = list(counts = counts_of(seu)),
    colData = S4Vectors::DataFrame(seu[[]], check.names = FALSE)
  )
}
if (have_objects) {
  suppressPackageStartupMessages({
    library(SeuratObject)
    library(SingleCellExperiment)
  })
}
demo <- if (have_objects) readRDS(system.file("extdata", "panc8_small.rds", package = "pybridge", mustWork = TRUE))
seu_query <- if (have_objects) subset(demo, tech == "indrop")
seu_ref <- if (have_objects) subset(demo, tech != "indrop")
sce_query <- if (have_objects) as_sce(seu_query)
sce_ref <- if (have_objects) as_sce(seu_ref)
truth <- if (have_objects) as.character(seu_query$cell_type)
ref_classes <- if (have_objects) sort(unique(as.character(seu_ref$cell_type)))

have_python <- function() {
  py <- pybridge_python()
  !is.na(py$python) && file.exists(py$python)
}
skip_if_no_python <- function() {
  if (!have_python()) testthat::skip("no Python environment for pybridge (set PYBRIDGE_PYTHON)")
}

# The method registry in the format of Python's answer to run_from_r(list(task = "methods")),
# for checks that need no Python (test-other-methods.R compares it with the real one).
fake_methods <- list(
  name = c("cicl", "itclust", "jind", "linear", "nmf_transfer", "scnym"),
  kind = c("clustering", "clustering", "annotation", "annotation", "clustering", "annotation"),
  reference = c("none", "required", "required", "required", "optional", "required"),
  maps_types = c(FALSE, TRUE, FALSE, FALSE, TRUE, FALSE),
  extra_fields = c("", "cell_score,raw_cell_types", "", "", "", "")
)
# Until the calling test ends: `fake_methods` is the registry, and any call into Python
# fails with "test: Python was called" (so a check that must come first is seen to).
local_fake_registry <- function(env = parent.frame()) {
  pb <- pybridge:::.pybridge
  old <- pb$methods
  pb$methods <- pybridge:::.parse_methods(fake_methods)
  withr::defer(pb$methods <- old, envir = env)
  suppressMessages(trace(".call_python", quote(stop("test: Python was called")), print = FALSE,
                         where = asNamespace("pybridge")))
  withr::defer(suppressMessages(untrace(".call_python", where = asNamespace("pybridge"))), envir = env)
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

# (test-other-methods.R) skip unless the Python side registers `name`
method_available <- function(name) {
  skip_if_no_python()
  methods <- run_once("methods", pybridge_methods())
  if (!name %in% methods$name) testthat::skip(paste0(name, " is not registered in the Python package"))
}

# (test-other-methods.R) `out` is `before` with the metadata columns `added`, and nothing else changed there
only_added <- function(out, before, added) {
  testthat::expect_identical(setdiff(colnames(out[[]]), colnames(before[[]])), added)
  testthat::expect_identical(out[[]][colnames(before[[]])], before[[]])
}
