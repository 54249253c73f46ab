#!/usr/bin/env bash
# Prepare the one call on a lent GPU machine (see scripts/gpu_check.sh and benchmarks/README.md).
# Run it HERE, with network, from any directory:   bash scripts/gpu_prepare.sh [DATA_DIR]
# (PYVER=3.11 fetches wheels for this machine's Python instead: a dry run of gpu_check.sh with DEVICE=cpu)
#
# The GPU machine has Python 3.12 with CUDA torch, numpy, scipy, pandas, scikit-learn, h5py,
# safetensors and tqdm, but no anndata and no network. This fills .gpu/ (git-ignored; name it in
# the call's `carry`) with
#   .gpu/whl/       anndata and the packages it imports that the image lacks (cp312 wheels),
#   .gpu/pandas/    pandas 2.3.3, installed there only if the image's pandas is 3.x (anndata 0.12 needs < 3),
#   .gpu/data.tgz   the dev benchmark's .h5ad files (9 reference -> query tasks, 6 of the 7 clustering sets:
#                   pbmc3k, 8.6 MB, is left out to stay inside the 64 MiB a call may carry),
# about 62 MB together.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
rm -rf .gpu && mkdir -p .gpu/whl .gpu/pandas .gpu/data
# the versions the test suite runs with here (.venv); --no-deps: each one is named
WHEELS="anndata==0.12.19 array-api-compat==1.16.0 legacy-api-wrap==1.5 natsort==8.4.0 scverse-misc==0.0.3
        session-info2==0.4.1 zarr==3.1.5 donfig==0.8.1.post1 google-crc32c==1.9.0 numcodecs==0.16.6"
PLAT=""
for n in 17 27 28; do PLAT="$PLAT --platform manylinux_2_${n}_x86_64"; done
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
  $PLAT --platform manylinux2014_x86_64 -d .gpu/whl $WHEELS
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYVER:-3.12}" --implementation cp \
  $PLAT --platform manylinux_2_24_x86_64 --platform manylinux2014_x86_64 -d .gpu/pandas pandas==2.3.3
# the dev tasks' files (benchmarks/tasks.py), without pbmc3k
FILES=$("$PY" -c "from benchmarks import tasks as T
print(' '.join(sorted({f for n in T.ANNOTATION_TASKS + T.CLUSTERING_SETS for f in T.files_of(n)}
                      - {'pbmc3k_counts_seurat_labels'})))")
for f in $FILES; do cp "$DATA/$f.h5ad" .gpu/data/; done
tar -czf .gpu/data.tgz -C .gpu data && rm -rf .gpu/data
echo "gpu_prepare: $(find .gpu -name '*.whl' | wc -l) wheels, $(du -sh .gpu | cut -f1) in .gpu/"
