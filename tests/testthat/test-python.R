# Finding Python: lookup order, and clear errors naming the fix. These run
# without starting Python in this R session.
skip_if_not_installed("withr")

test_that("the Python lookup order is use_pybridge() > PYBRIDGE_PYTHON > RETICULATE_PYTHON > default virtualenv", {
  py <- Sys.which("python3")
  skip_if(!nzchar(py), "no python3 on the PATH")
  env <- pybridge:::.pybridge
  old <- env$explicit
  on.exit(env$explicit <- old, add = TRUE)
  env$explicit <- NULL
  fake_home <- withr::local_tempdir()
  withr::local_envvar(PYBRIDGE_PYTHON = NA, RETICULATE_PYTHON = NA, WORKON_HOME = fake_home)
  expect_identical(pybridge_python()$source, "none")
  expect_error(pybridge:::.find_python(), "install_pybridge\\(\\)", class = "pybridge_python_missing")

  dir.create(file.path(fake_home, "pybridge", "bin"), recursive = TRUE)
  file.symlink(py, file.path(fake_home, "pybridge", "bin", "python"))
  expect_identical(pybridge_python()$source, "default virtualenv")
  # the virtualenv's own bin/python is kept (resolving the link would leave the virtualenv)
  expect_match(pybridge_python()$python, "pybridge/bin/python$")

  withr::local_envvar(RETICULATE_PYTHON = py)
  expect_identical(pybridge_python()$source, "RETICULATE_PYTHON")
  withr::local_envvar(PYBRIDGE_PYTHON = py)
  expect_identical(pybridge_python()$source, "PYBRIDGE_PYTHON")
  env$explicit <- "/some/explicit/python"
  expect_identical(pybridge_python(), list(python = "/some/explicit/python", source = "use_pybridge()"))
})

test_that("a Python path that does not exist is an error naming the fix", {
  withr::local_envvar(PYBRIDGE_PYTHON = "/nonexistent/bin/python")
  env <- pybridge:::.pybridge
  old <- env$explicit
  on.exit(env$explicit <- old, add = TRUE)
  env$explicit <- NULL
  expect_error(pybridge:::.find_python(),
               "PYBRIDGE_PYTHON does not exist: /nonexistent/bin/python.*install_pybridge\\(\\)",
               class = "pybridge_python_missing")
  expect_error(use_pybridge("/nonexistent/bin/python"), "does not exist", class = "pybridge_python_missing")
})

test_that("a Python without pybridge's modules is an error that lists them and the fix", {
  py <- Sys.which("python3")
  skip_if(!nzchar(py), "no python3 on the PATH")
  bare <- withr::local_tempdir()
  status <- system2(py, c("-m", "venv", "--without-pip", shQuote(bare)), stdout = FALSE, stderr = FALSE)
  skip_if(status != 0L, "cannot create a bare virtualenv here")
  bare_py <- file.path(bare, "bin", "python")
  err <- withr::with_dir(tempdir(), expect_error(pybridge:::.check_python(bare_py, "a test"),
                                                 class = "pybridge_python_missing"))
  expect_match(conditionMessage(err), "lacks the module\\(s\\) pybridge, numpy, scipy, pandas, anndata, torch")
  expect_match(conditionMessage(err), "install_pybridge\\(python = ")
  expect_identical(err$missing, c("pybridge", "numpy", "scipy", "pandas", "anndata", "torch"))
})

test_that("a fresh R session without a usable Python stops with that message instead of crashing", {
  skip_if_not_installed("SeuratObject")
  rscript <- file.path(R.home("bin"), "Rscript")
  code <- paste(
    "suppressPackageStartupMessages(library(SeuratObject)); library(pybridge);",
    "seu <- readRDS(system.file('extdata', 'panc8_small.rds', package = 'pybridge'));",
    "r <- tryCatch(RunScNym(seu, seu, verbose = FALSE), pybridge_python_missing = function(e) conditionMessage(e));",
    "cat(r)"
  )
  out <- withr::with_envvar(
    c(PYBRIDGE_PYTHON = "/nonexistent/python", RETICULATE_PYTHON = NA, WORKON_HOME = tempfile()),
    system2(rscript, c("-e", shQuote(code)), stdout = TRUE, stderr = TRUE)
  )
  expect_null(attr(out, "status"))
  expect_match(paste(out, collapse = " "), "PYBRIDGE_PYTHON does not exist")
})

test_that("install_pybridge() pins the dependencies and installs this checkout", {
  src <- withr::local_tempdir()
  writeLines("[project]\nname = 'pybridge'", file.path(src, "pyproject.toml"))
  writeLines("torch==2.13.0", file.path(src, "constraints.txt"))
  cmds <- install_pybridge(envname = file.path(src, "venv"), source = src, python = "/usr/bin/python3", dry_run = TRUE)
  expect_length(cmds, 4L)
  expect_match(cmds[1], "-m venv")
  expect_match(cmds[3], "pip install -c .*constraints.txt.* torch$")
  expect_match(cmds[4], paste0("pip install -c .*constraints.txt.*", basename(src), "\\[r\\]"))
  # without a constraints file in the source, the copy shipped with the R package is used
  file.remove(file.path(src, "constraints.txt"))
  cmds <- install_pybridge(envname = file.path(src, "venv"), source = src, python = "/usr/bin/python3", dry_run = TRUE)
  expect_match(cmds[3], system.file("python", "constraints.txt", package = "pybridge"), fixed = TRUE)
  expect_error(install_pybridge(source = file.path(src, "nope"), dry_run = TRUE), "does not exist")
})

test_that("the anndata2ri path inside an R session is refused where reticulate would crash", {
  skip_if_not_installed("reticulate")
  expect_identical(pybridge:::.anndata2ri_safe(), utils::packageVersion("reticulate") >= "1.31")
  withr::local_options(pybridge.converter = "anndata2ri")
  env <- pybridge:::.pybridge
  env$warned_converter <- NULL
  if (!pybridge:::.anndata2ri_safe()) {
    expect_message(conv <- pybridge:::.converter("reticulate"), "needs reticulate >= 1.31")
    expect_identical(conv, "sparse")
  }
  expect_identical(pybridge:::.converter("rpy2"), "anndata2ri")
  withr::local_options(pybridge.converter = "bogus")
  expect_error(pybridge:::.converter("reticulate"), "must be")
})

test_that("R refuses reticulate when it runs inside Python without the registered bridge", {
  expect_false(pybridge:::.hosted_by_rpy2())
  expect_identical(pybridge:::.backend(), "reticulate")
})

test_that("the reference BLAS is detected (torch is ~20x slower in R with it)", {
  expect_true(pybridge:::.is_reference_blas("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0"))
  expect_false(pybridge:::.is_reference_blas("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"))
})
