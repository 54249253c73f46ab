#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: an R session that annotates a
# real Seurat object (panc8, one technology as query) with RunScNym, prints a
# per-class accuracy table and writes plots to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYBRIDGE_PYTHON="$(pwd)/.venv/bin/python"
mkdir -p out
Rscript scripts/main_job.R
