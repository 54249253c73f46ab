#!/usr/bin/env bash
# Set up everything pybridge needs on a Debian bookworm machine (run as root):
# R 4.2.2 and Debian's R packages, a Python virtualenv in .venv with the pinned
# dependencies and pybridge itself, and the R package pybridge.
# Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

APT_PACKAGES="r-base-dev r-cran-seurat r-cran-seuratobject r-bioc-singlecellexperiment r-bioc-scuttle
  r-cran-reticulate r-cran-testthat r-cran-roxygen2 r-cran-knitr r-cran-rmarkdown r-cran-ggplot2
  r-cran-cli r-cran-matrix r-cran-jsonlite r-cran-lintr pandoc python3-venv python3-dev
  r-bioc-biocstyle r-bioc-scater r-cran-gridextra
  libopenblas0-pthread"

missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "== setup: installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "== setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "== setup: installing Python dependencies (constraints.txt)"
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first, pinned to the local CPU wheel (a bare 'torch' would pull GBs of CUDA wheels)
.venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -c constraints.txt -e ".[r,test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import pybridge, torch, numpy, rpy2, anndata2ri; print('== setup: pybridge', pybridge.__version__, '| torch', torch.__version__, '| numpy', numpy.__version__, '| rpy2', rpy2.__version__)"

if [ -f DESCRIPTION ]; then
  echo "== setup: installing the R package"
  R CMD INSTALL --no-multiarch . >/tmp/pybridge-r-install.log 2>&1 || { cat /tmp/pybridge-r-install.log; exit 1; }
fi
# the R package finds this environment through PYBRIDGE_PYTHON (see ?use_pybridge)
echo "== setup: done (Python: $ROOT/.venv/bin/python)"
