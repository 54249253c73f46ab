#' pybridge: reference-based cell annotation for Seurat and SingleCellExperiment
#'
#' `RunScNym()` annotates a Seurat object or a SingleCellExperiment from a
#' labelled reference (`RunLinear()`: the linear baseline); `TrainScNym()`, `TrainJIND()` and `TrainLinear()`
#' train once for many queries. The methods
#' run in the Python package pybridge: see [install_pybridge()] and
#' [use_pybridge()] for the Python environment.
#'
#' @keywords internal
#' @importFrom Matrix Matrix
"_PACKAGE"
