# The only file that sets up or loads Python.
#
# Two backends sit behind every Run*/Train* function:
#   * "reticulate": R hosts Python (an R session, RStudio, Rscript). reticulate
#     is loaded lazily, only here, and only in this mode.
#   * "rpy2": Python hosts R (rpy2). The Python module pybridge.r registers an
#     R function in options(pybridge.rpy2_callback = ) and R hands its requests
#     to it. In this mode R must never touch reticulate: with reticulate < 1.31
#     (Debian's 1.28) the first garbage collection of a reticulate object in an
#     rpy2-hosted R aborts the whole process.
#
# ---------------------------------------------------------------- called from Python
# The R side of the Python package's interface. Python (pybridge/r/) calls these
# R functions and options by name: renaming one, or changing its arguments, breaks
# the Python side.
#   .for_anndata2ri(object, assay, what,       convert.R  pybridge.r.read_rds(): an .rds object as a
#                   layer = NULL)                         SingleCellExperiment for anndata2ri
#   .store_from_python(object, res, name, fn)  store.R    pybridge.r.write_result_rds(): store a result
#                                                         Python computed into the object
#   options(pybridge.rpy2_callback = )         here       set by pybridge.r.register(); .call_python()
#                                                         hands its requests to it (rpy2 backend)
#   options(pybridge.handoff = )               here       the environment .call_python() leaves objects in
#                                                         for run_from_r_handoff() (anndata2ri converter)
# benchmarks/bench_r_overhead.py also calls .extract(), .call_python(), .normalize_result()
# and .store_result() directly, to time the bridge without a model.

.pybridge <- new.env(parent = emptyenv())

#: the Python modules pybridge needs, checked before reticulate binds to a Python
.required_modules <- c("pybridge", "numpy", "scipy", "pandas", "anndata", "torch")

.hosted_by_rpy2 <- function() {
  # rpy2 starts the embedded R with argv = c("rpy2", "--quiet", "--no-save")
  identical(commandArgs()[1L], "rpy2")
}

.backend <- function() {
  if (.hosted_by_rpy2()) {
    cb <- getOption("pybridge.rpy2_callback")
    if (!is.function(cb)) {
      .abort(
        "R is running inside Python (rpy2), but pybridge's Python bridge is not registered in this R. ",
        "In Python, run `import pybridge.r; pybridge.r.register()` before calling pybridge's R functions ",
        "(in this mode R must not start Python through reticulate).",
        class = "pybridge_python_missing"
      )
    }
    return("rpy2")
  }
  "reticulate"
}

#' Choose the Python environment pybridge uses
#'
#' Points pybridge at a Python interpreter that has the Python package
#' `pybridge` installed (e.g. the virtualenv made by [install_pybridge()]).
#' Call it before the first pybridge function of the R session: once
#' reticulate has started Python, it cannot switch to another interpreter.
#'
#' Without a call to `use_pybridge()`, the Python is looked up in this order:
#' the environment variable `PYBRIDGE_PYTHON`, then `RETICULATE_PYTHON`, then
#' the default virtualenv `pybridge` made by [install_pybridge()] (under
#' `WORKON_HOME`, by default `~/.virtualenvs`).
#'
#' @param python Path to a Python executable, or the path of a virtualenv
#'   directory (its `bin/python` is used). `NULL` (the default) takes the
#'   Python the lookup order finds, and checks it.
#' @param check Check now (in a subprocess, without starting Python in R) that
#'   this Python can import the modules pybridge needs.
#' @return The path of the Python executable, invisibly.
#' @seealso [install_pybridge()], [pybridge_python()]
#' @examples
#' \donttest{
#' # check the Python that the lookup order finds, and use it
#' if (file.exists(pybridge_python()$python)) {
#'   use_pybridge()
#' }
#' }
#' \dontrun{
#' # or name one (a Python executable or a virtualenv directory)
#' use_pybridge("~/.virtualenvs/pybridge")
#' }
#' @export
use_pybridge <- function(python = NULL, check = TRUE) {
  if (is.null(python)) {
    found <- .find_python()
    if (isTRUE(check)) .check_python(found$python, found$source)
    return(invisible(found$python))
  }
  python <- .python_executable(python, "use_pybridge(python = )")
  if (isTRUE(check)) .check_python(python, "use_pybridge(python = )")
  if (!is.null(.pybridge$module) && !identical(.pybridge$python, python)) {
    .warn("pybridge already uses the Python at ", .pybridge$python, " in this R session; ",
          "restart R to switch to ", python, ".")
    return(invisible(python))
  }
  .pybridge$explicit <- python
  invisible(python)
}

#' The Python pybridge would use, and where that choice comes from
#'
#' Follows the lookup order of [use_pybridge()] without starting Python or
#' checking the interpreter, and without an error when none is found.
#'
#' @return A list with `python` (path or `NA`) and `source` (one of
#'   `"use_pybridge()"`, `"PYBRIDGE_PYTHON"`, `"RETICULATE_PYTHON"`,
#'   `"default virtualenv"`, or `"none"`).
#' @seealso [use_pybridge()], [install_pybridge()]
#' @examples
#' found <- pybridge_python()
#' found$source
#' file.exists(found$python)  # FALSE when none is set up yet: see install_pybridge()
#' @export
pybridge_python <- function() {
  .find_python(error = FALSE)
}

.default_venv <- function(envname = "pybridge") {
  home <- Sys.getenv("WORKON_HOME", unset = "")
  if (!nzchar(home)) home <- file.path(path.expand("~"), ".virtualenvs")
  file.path(path.expand(home), envname)
}

.python_executable <- function(python, where) {
  if (!is.character(python) || length(python) != 1L || is.na(python) || !nzchar(python)) {
    .abort("`python` must be one path to a Python executable (", where, ").")
  }
  python <- path.expand(python)
  if (dir.exists(python)) python <- file.path(python, "bin", "python")
  if (!file.exists(python)) {
    .abort(
      "The Python given by ", where, " does not exist: ", python, ". ",
      "Create pybridge's environment with pybridge::install_pybridge(), or point to an existing one ",
      "with pybridge::use_pybridge(\"/path/to/python\").",
      class = "pybridge_python_missing"
    )
  }
  .abs_path(python)
}

# An absolute path that keeps the last link: a virtualenv's bin/python is a
# symlink to the base interpreter, and only the link activates the virtualenv.
.abs_path <- function(path) file.path(normalizePath(dirname(path), mustWork = TRUE), basename(path))

.find_python <- function(error = TRUE) {
  if (!is.null(.pybridge$explicit)) {
    return(list(python = .pybridge$explicit, source = "use_pybridge()"))
  }
  for (var in c("PYBRIDGE_PYTHON", "RETICULATE_PYTHON")) {
    value <- Sys.getenv(var, unset = "")
    if (nzchar(value)) {
      if (!error && !file.exists(path.expand(value))) return(list(python = path.expand(value), source = var))
      return(list(python = .python_executable(value, paste0("the environment variable ", var)), source = var))
    }
  }
  venv <- file.path(.default_venv(), "bin", "python")
  if (file.exists(venv)) return(list(python = .abs_path(venv), source = "default virtualenv"))
  if (!error) return(list(python = NA_character_, source = "none"))
  .abort(
    "No Python environment for pybridge was found (looked at use_pybridge(), PYBRIDGE_PYTHON, ",
    "RETICULATE_PYTHON and the default virtualenv ", .default_venv(), "). ",
    "Create it once with pybridge::install_pybridge(), or point to a Python that has pybridge with ",
    "pybridge::use_pybridge(\"/path/to/python\") or Sys.setenv(PYBRIDGE_PYTHON = \"/path/to/python\").",
    class = "pybridge_python_missing"
  )
}

# Check in a subprocess (cheap, and before reticulate binds R to this Python for
# the whole session) that `python` can import what pybridge needs.
.check_python <- function(python, source) {
  code <- paste0(
    "import importlib.util, sys; ",
    "m = [n for n in ", paste0("[", paste0("'", .required_modules, "'", collapse = ", "), "]"),
    " if importlib.util.find_spec(n) is None]; print(' '.join(m))"
  )
  out <- suppressWarnings(tryCatch(
    system2(python, c("-c", shQuote(code)), stdout = TRUE, stderr = TRUE),
    error = function(e) structure(conditionMessage(e), status = 127L)
  ))
  status <- attr(out, "status")
  if (!is.null(status) && status != 0L) {
    .abort(
      "The Python at ", python, " (from ", source, ") does not run: ", paste(out, collapse = " "), ". ",
      "Create a working environment with pybridge::install_pybridge().",
      class = "pybridge_python_missing"
    )
  }
  missing <- strsplit(trimws(paste(out, collapse = " ")), " +")[[1]]
  missing <- missing[nzchar(missing)]
  if (length(missing)) {
    .abort(
      "The Python at ", python, " (from ", source, ") lacks the module(s) ", paste(missing, collapse = ", "),
      ". Install pybridge's Python side into it with pybridge::install_pybridge(python = \"", python,
      "\") (or `", python, " -m pip install -c constraints.txt -e \"/path/to/pybridge[r]\"`), ",
      "or point pybridge to another Python with pybridge::use_pybridge().",
      class = "pybridge_python_missing",
      data = list(missing = missing)
    )
  }
  invisible(TRUE)
}

# The Python module pybridge.r through reticulate (R-hosted mode only).
.py_module <- function() {
  if (!is.null(.pybridge$module)) return(.pybridge$module)
  if (.hosted_by_rpy2()) {
    .abort("internal: reticulate must not be used when R runs inside Python (rpy2).")
  }
  if (!requireNamespace("reticulate", quietly = TRUE)) {
    .abort(
      "The R package reticulate is needed to run pybridge from R. Install it ",
      "(Debian: apt-get install r-cran-reticulate; elsewhere: install.packages(\"reticulate\")).",
      class = "pybridge_python_missing"
    )
  }
  found <- .find_python()
  python <- found$python
  if (reticulate::py_available(initialize = FALSE)) {
    # reticulate already started a Python in this session: use it if it has pybridge
    current <- reticulate::py_config()$python
    if (!identical(.abs_path(current), python) &&
        !reticulate::py_module_available("pybridge")) {
      .abort(
        "reticulate already started the Python at ", current, " in this R session, and it has no pybridge ",
        "module. Restart R and call pybridge::use_pybridge(\"", python, "\") before anything else starts Python.",
        class = "pybridge_python_missing"
      )
    }
  } else {
    .check_python(python, found$source)
    # reticulate gives RETICULATE_PYTHON precedence over use_python(); set it to the
    # chosen Python while reticulate starts, so that pybridge's lookup order holds
    old <- Sys.getenv("RETICULATE_PYTHON", unset = NA)
    Sys.setenv(RETICULATE_PYTHON = python)
    on.exit(if (is.na(old)) Sys.unsetenv("RETICULATE_PYTHON") else Sys.setenv(RETICULATE_PYTHON = old), add = TRUE)
    reticulate::use_python(python, required = TRUE)
  }
  .pybridge$torch_isolated <- .load_torch_isolated()
  module <- tryCatch(
    reticulate::import("pybridge.r", convert = TRUE, delay_load = FALSE),
    error = function(e) {
      .abort(
        "Python started, but `import pybridge.r` failed: ", conditionMessage(e),
        " Reinstall pybridge's Python side with pybridge::install_pybridge().",
        class = "pybridge_python_missing"
      )
    }
  )
  .pybridge$module <- module
  .pybridge$python <- python
  .check_blas()
  module
}

# In an R-hosted session the R executable's libblas comes first in the symbol
# search order, so a plainly imported torch sends its matrix products (sgemm_)
# to R's BLAS instead of its own MKL. With the reference BLAS that is ~20x
# slower than from Python; with Debian's OpenBLAS the products are fast, but
# OpenBLAS's threads and torch's OpenMP threads then compete for the cores
# (scNym trained 1.3-2.5x slower than from Python in benchmarks/bench_r_overhead.py).
# So torch is imported first with RTLD_DEEPBIND (Linux), which makes libtorch
# resolve its own symbols before R's. Returns TRUE when that was done; FALSE
# when torch was already imported in this session, the platform has no
# RTLD_DEEPBIND, or options(pybridge.isolate_torch = FALSE) turns it off.
.load_torch_isolated <- function() {
  if (!isTRUE(getOption("pybridge.isolate_torch", TRUE))) return(FALSE)
  code <- paste(
    "import os, sys",
    "isolated = False",
    "if 'torch' not in sys.modules and hasattr(os, 'RTLD_DEEPBIND'):",
    "    flags = sys.getdlopenflags()",
    "    sys.setdlopenflags(flags | os.RTLD_DEEPBIND)",
    "    try:",
    "        import torch",
    "        isolated = True",
    "    except ImportError:",
    "        pass",
    "    finally:",
    "        sys.setdlopenflags(flags)",
    sep = "\n"
  )
  out <- tryCatch(reticulate::py_run_string(code, local = TRUE, convert = TRUE), error = function(e) NULL)
  isTRUE(out$isolated)
}

# Warn once when torch shares R's reference BLAS (torch was imported before
# pybridge could isolate it).
.check_blas <- function() {
  blas <- tryCatch(extSoftVersion()[["BLAS"]], error = function(e) "")
  if (is.null(.pybridge$warned_blas) && !isTRUE(.pybridge$torch_isolated) && .is_reference_blas(blas)) {
    .pybridge$warned_blas <- TRUE
    .warn("R uses the reference BLAS (", blas, ") and torch was imported before pybridge could keep it on its ",
          "own BLAS, so pybridge's models train ~20x slower than from Python. Restart R and load pybridge ",
          "before anything imports torch, or install an optimised BLAS ",
          "(Debian/Ubuntu: apt-get install libopenblas0-pthread).")
  }
  invisible(blas)
}

.is_reference_blas <- function(blas) {
  is.character(blas) && length(blas) == 1L && grepl("/blas/libblas[.]so", blas) &&
    !grepl("openblas|mkl|atlas|blis", blas)
}

# Can the anndata2ri converter run inside this R-hosted session? rpy2 attached to
# an R that reticulate hosts needs reticulate >= 1.31; with older versions (Debian
# bookworm's 1.28) it aborts the R process with a GIL error, so it is refused.
.anndata2ri_safe <- function() {
  utils::packageVersion("reticulate") >= "1.31"
}

# Which converter to use: getOption("pybridge.converter", "auto").
#   "auto"       rpy2 mode: anndata2ri (in Python); R-hosted mode: dgCMatrix
#   "sparse"     dgCMatrix -> scipy through reticulate (R-hosted mode)
#   "anndata2ri" SCE -> AnnData with anndata2ri; in R-hosted mode only where
#                .anndata2ri_safe(), otherwise falls back to "sparse" with a message
.converter <- function(backend, verbose = TRUE) {
  want <- getOption("pybridge.converter", "auto")
  if (!is.character(want) || length(want) != 1L || !want %in% c("auto", "sparse", "anndata2ri")) {
    .abort("options(pybridge.converter = ) must be \"auto\", \"sparse\" or \"anndata2ri\".")
  }
  if (backend == "rpy2") return("anndata2ri")
  if (want == "anndata2ri") {
    if (.anndata2ri_safe()) return("anndata2ri")
    if (is.null(.pybridge$warned_converter)) {
      .pybridge$warned_converter <- TRUE
      .inform(TRUE, "anndata2ri conversion inside an R session needs reticulate >= 1.31 (this is ",
              as.character(utils::packageVersion("reticulate")), ", where it would crash R); ",
              "sending the counts as a sparse dgCMatrix instead.")
    }
  }
  "sparse"
}

# Send a request to Python through the active backend; returns the plain R list
# that Python's run_from_r() answers, after raising its error and re-issuing its
# warnings in R.
.call_python <- function(request, query = NULL, reference = NULL, verbose = TRUE) {
  backend <- .backend()
  converter <- .converter(backend, verbose)
  t0 <- .now()
  if (backend == "rpy2") {
    if (!is.null(query)) request$query <- .as_sce(query)
    if (!is.null(reference)) request$reference <- if (.is_payload(reference)) .as_sce(reference) else reference
    t_built <- .now()
    out <- getOption("pybridge.rpy2_callback")(request)
  } else {
    t_start <- .now()
    module <- .py_module()
    start_s <- .now() - t_start
    if (converter == "anndata2ri") {
      handoff <- .handoff_env()
      if (!is.null(query)) {
        assign("query", .as_sce(query), envir = handoff)
        request$query <- list(kind = "handoff", name = "query")
      }
      if (!is.null(reference) && .is_payload(reference)) {
        assign("reference", .as_sce(reference), envir = handoff)
        request$reference <- list(kind = "handoff", name = "reference")
      } else if (!is.null(reference)) {
        request$reference <- reference
      }
      on.exit(rm(list = ls(handoff), envir = handoff), add = TRUE)
      t_built <- .now()
      out <- module$run_from_r_handoff(request)
    } else {
      if (!is.null(query)) request$query <- .as_matrix_payload(query)
      if (!is.null(reference)) {
        request$reference <- if (.is_payload(reference)) .as_matrix_payload(reference) else reference
      }
      t_built <- .now()
      out <- module$run_from_r(request)
    }
  }
  t_done <- .now()
  if (is.null(out)) .abort("internal: the Python side returned nothing (", backend, " backend).")
  if (identical(as.character(out$error_type), "KeyboardInterrupt")) {
    # (rpy2 backend; with reticulate a KeyboardInterrupt arrives as a real R interrupt)
    .abort(out$error, class = c("pybridge_interrupted", "interrupt"))
  }
  if (!is.null(out$error)) {
    .abort(out$error, class = "pybridge_python_error",
           data = list(python_type = out$error_type, python_traceback = out$traceback))
  }
  for (w in unlist(out$warnings)) .warn(w)
  # build_s: R-side payload building (+ starting Python, start_s, on the first call of a session);
  # call_s: the call into Python, of which python_s ran inside run_from_r() (the rest is conversion)
  out$bridge <- list(backend = backend, converter = converter,
                     start_s = if (exists("start_s", inherits = FALSE)) start_s else 0,
                     build_s = t_built - t0, call_s = t_done - t_built,
                     python_s = if (is.null(out$python_s)) NA_real_ else out$python_s)
  out
}

.handoff_env <- function() {
  env <- getOption("pybridge.handoff")
  if (!is.environment(env)) {
    env <- new.env(parent = emptyenv())
    options(pybridge.handoff = env)
  }
  env
}

#' Create pybridge's Python environment
#'
#' Makes a Python virtualenv with the pinned dependencies (the `constraints.txt`
#' of the source checkout: torch 2.13.0 as the CPU build, numpy < 2 for
#' reticulate < 1.36, rpy2 3.5.x) and installs the Python package `pybridge`
#' from a source checkout into it, then points this R session at it (see
#' [use_pybridge()]).
#'
#' The R package does not carry the Python sources. `source` is found in this
#' order: the argument, the environment variable `PYBRIDGE_SOURCE`,
#' `getOption("pybridge.source")`, and the working directory when it is a
#' pybridge checkout (it holds `pyproject.toml` and `DESCRIPTION` of pybridge).
#' It may also be anything `pip install` accepts (e.g. a wheel file).
#'
#' @param envname Name of the virtualenv, created under `WORKON_HOME` (default
#'   `~/.virtualenvs`), or a path containing a `/`.
#' @param source Path of a pybridge source checkout (or a pip requirement).
#' @param python Python used to create the virtualenv (default `python3` on the
#'   PATH); Python >= 3.10.
#' @param extras Optional extras of the Python package to install (`"r"` brings
#'   rpy2 and anndata2ri).
#' @param editable Install the checkout in editable mode (`pip install -e`).
#' @param dry_run Only return the commands that would run.
#' @return The path of the environment's Python, invisibly (with `dry_run`, the
#'   commands as a character vector).
#' @examples
#' # the commands it would run, without running them
#' install_pybridge(source = "pybridge-0.1.0-py3-none-any.whl", python = "python3", dry_run = TRUE)
#' \dontrun{
#' install_pybridge(source = "~/src/pybridge")
#' }
#' @export
install_pybridge <- function(envname = "pybridge", source = NULL, python = NULL, extras = "r",
                             editable = FALSE, dry_run = FALSE) {
  source <- .find_source(source)
  envdir <- if (grepl("/", envname, fixed = TRUE)) path.expand(envname) else .default_venv(envname)
  python <- unname(python %||% Sys.which("python3"))
  if (!nzchar(python)) .abort("No python3 on the PATH; pass install_pybridge(python = \"/path/to/python3\").")
  constraints <- .constraints_file(source)
  env_py <- file.path(envdir, "bin", "python")
  target <- if (dir.exists(source)) {
    spec <- normalizePath(source)
    if (length(extras) && any(nzchar(extras))) spec <- paste0(spec, "[", paste(extras, collapse = ","), "]")
    c(if (isTRUE(editable)) "-e", shQuote(spec))
  } else {
    shQuote(source)
  }
  # the first element is the program (system2() quotes it), the rest are shell-quoted arguments
  cmds <- list(
    c(python, "-m", "venv", shQuote(envdir)),
    c(env_py, "-m", "pip", "install", "--upgrade", "pip"),
    # torch first, pinned by the constraints (an unpinned torch pulls GBs of CUDA wheels)
    c(env_py, "-m", "pip", "install", "-c", shQuote(constraints), "torch"),
    c(env_py, "-m", "pip", "install", "-c", shQuote(constraints), target)
  )
  show <- function(cmd) paste(c(shQuote(cmd[[1]]), cmd[-1]), collapse = " ")
  if (isTRUE(dry_run)) return(vapply(cmds, show, ""))
  .inform(TRUE, "Creating pybridge's Python environment in ", envdir)
  for (cmd in cmds) {
    .inform(TRUE, show(cmd), type = "step")
    # without R's LD_LIBRARY_PATH: with it, a Python built elsewhere (e.g. pyenv) can load the
    # wrong libpython for its ssl module, and pip then cannot reach the package index
    status <- system2("env", c("-u", "LD_LIBRARY_PATH", shQuote(cmd[[1]]), cmd[-1]))
    if (!identical(as.integer(status), 0L)) {
      .abort("This step of install_pybridge() failed (exit status ", status, "): ", show(cmd))
    }
  }
  .check_python(env_py, "install_pybridge()")
  if (is.null(.pybridge$module)) .pybridge$explicit <- .abs_path(env_py)
  .inform(TRUE, "pybridge's Python is ready: ", env_py, type = "done")
  invisible(env_py)
}

.find_source <- function(source = NULL) {
  cands <- list(
    list(value = source, from = "install_pybridge(source = )"),
    list(value = Sys.getenv("PYBRIDGE_SOURCE", unset = ""), from = "PYBRIDGE_SOURCE"),
    list(value = getOption("pybridge.source"), from = "options(pybridge.source = )")
  )
  for (cand in cands) {
    v <- cand$value
    if (is.null(v) || !nzchar(v)) next
    v <- path.expand(v)
    if (dir.exists(v) && !file.exists(file.path(v, "pyproject.toml"))) {
      .abort("The pybridge source given by ", cand$from, " (", v, ") has no pyproject.toml; ",
             "point it at the root of a pybridge checkout.")
    }
    if (!dir.exists(v) && !grepl("[.](whl|tar[.]gz|zip)$", v) && !grepl("^(git[+]|https?://)", v)) {
      .abort("The pybridge source given by ", cand$from, " (", v, ") does not exist.")
    }
    return(v)
  }
  wd <- getwd()
  if (file.exists(file.path(wd, "pyproject.toml")) && file.exists(file.path(wd, "DESCRIPTION")) &&
      any(grepl("^Package: *pybridge *$", readLines(file.path(wd, "DESCRIPTION"), warn = FALSE)))) {
    return(wd)
  }
  .abort(
    "Where are pybridge's Python sources? Pass install_pybridge(source = \"/path/to/pybridge\") ",
    "(the checkout this R package was installed from), or set PYBRIDGE_SOURCE."
  )
}

.constraints_file <- function(source) {
  own <- if (dir.exists(source)) file.path(source, "constraints.txt") else ""
  if (nzchar(own) && file.exists(own)) return(normalizePath(own))
  system.file("python", "constraints.txt", package = "pybridge", mustWork = TRUE)
}

`%||%` <- function(x, y) if (is.null(x)) y else x
