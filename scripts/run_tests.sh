#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every test: the linters (ruff, lintr), testthat (the R package), the
# vignettes (rendered with every chunk run), and pytest (Python, CLI, the Python
# tutorial, and the R entry points driven through rpy2) on Debian bookworm;
# PYBRIDGE_LANE_TESTS=1 also runs them in the trixie lane (scripts/run_lane_tests.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYBRIDGE_PYTHON="$(pwd)/.venv/bin/python"
status=0
echo "== lint: ruff (Python: lint with import sorting, format)"
{ .venv/bin/ruff check . && .venv/bin/ruff format --check .; } || status=1
echo "== lint: lintr (R package and testthat)"
Rscript -e 'l <- lintr::lint_package(); print(l); quit(status = length(l) > 0)' || status=1
echo "== tests: R (testthat)"
if [ -d tests/testthat ]; then
  Rscript -e 'res <- testthat::test_dir("tests/testthat", package = "pybridge", load_package = "installed", reporter = "summary", stop_on_failure = TRUE)' || status=1
fi
echo "== tests: vignettes (rendered to out/vignettes)"
bash scripts/build_vignettes.sh out/vignettes || status=1
echo "== tests: Python (pytest)"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=1

# The same suites on today's stack (Debian trixie: R 4.5, Seurat 5, reticulate 1.41, Python 3.13, numpy 2):
# bash scripts/run_lane_tests.sh, or PYBRIDGE_LANE_TESTS=1 here.
if [ "${PYBRIDGE_LANE_TESTS:-}" = "1" ]; then
  bash scripts/run_lane_tests.sh "$@" || status=1
fi
exit $status
