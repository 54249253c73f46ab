# First: does S3 dispatch from the generic reach the S4 class SingleCellExperiment?
# A bad argument is refused inside the methods (by the shared worker) with a
# message the default method never gives, so the error tells which method ran --
# no Python needed.
skip_if_no_objects()

test_that("S3 dispatch reaches the SingleCellExperiment S4 class (and its subclasses)", {
  expect_identical(utils::getS3method("RunScNym", "SingleCellExperiment"), pybridge:::RunScNym.SingleCellExperiment)
  expect_error(RunScNym(sce_query, reference = 42), "`reference` must be a Seurat object",
               class = "pybridge_input_error")

  setClass("PybridgeTestSCE", contains = "SingleCellExperiment", where = globalenv())
  on.exit(removeClass("PybridgeTestSCE", where = globalenv()), add = TRUE)
  sub <- new("PybridgeTestSCE", sce_query)
  expect_error(RunScNym(sub, reference = 42), "`reference` must be a Seurat object", class = "pybridge_input_error")
})

test_that("S3 dispatch reaches the Seurat method", {
  expect_error(RunScNym(seu_query, reference = 42), "`reference` must be a Seurat object",
               class = "pybridge_input_error")
})

test_that("every Run* generic reaches a method for both classes", {
  for (fn in names(pybridge:::.python_names)) {
    for (x in list(sce_query, seu_query)) {
      # the seed is the shared worker's first check; the default method would say "works on a Seurat object"
      expect_error(do.call(fn, list(x, seed = -1)), "`seed` must be one non-negative whole number",
                   class = "pybridge_input_error")
    }
  }
})

test_that("other objects get a clear error from the default method", {
  m <- counts_of(seu_query)
  expect_error(RunScNym(m, seu_ref),
               "works on a Seurat object or a SingleCellExperiment, not on an object of class 'dgCMatrix'",
               class = "pybridge_input_error")
  expect_error(RunScNym(data.frame(a = 1), seu_ref), "not on an object of class 'data.frame'")
})
