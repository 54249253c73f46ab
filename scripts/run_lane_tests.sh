#!/usr/bin/env bash
# The test suites on today's stack: testthat, the vignettes and pytest in the trixie lane
# (scripts/lane.sh: a Debian trixie chroot with R 4.5, Seurat 5.2, SeuratObject 5.0, reticulate 1.41,
# Python 3.13, torch 2.6, numpy 2.2, built on first use and cached outside the clone).
# Usage: bash scripts/run_lane_tests.sh [pytest args]   (as root)
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
echo "== lane: building or updating the trixie lane"
bash scripts/lane.sh --info || exit 1
echo "== lane: tests: R (testthat)"
bash scripts/lane.sh -- Rscript -e 'res <- testthat::test_dir("tests/testthat", package = "pybridge", load_package = "installed", reporter = "summary", stop_on_failure = TRUE)' || status=1
echo "== lane: tests: vignettes (rendered to out/vignettes-lane)"
bash scripts/lane.sh -- bash scripts/build_vignettes.sh out/vignettes-lane || status=1
echo "== lane: tests: Python (pytest)"
bash scripts/lane.sh -- python -m pytest -q -p no:cacheprovider "$@" || status=1
exit $status
