#!/usr/bin/env bash
# The one call on a lent GPU machine: the CUDA path of every method, then the GPU rows of the dev benchmark.
#
#   here:        bash scripts/gpu_prepare.sh            # wheels + data into .gpu/ (needs network)
#   device tool: run(command="bash scripts/gpu_check.sh", carry=[".gpu"], timeout_s=580)
#   here:        see benchmarks/README.md ("GPU") to merge the returned runs into the results page
#
# Writes to $OUT (the device tool's return folder; out/gpu when run elsewhere):
#   device_check.md / .log   benchmarks/device_check.py: tensors on the GPU, CPU vs GPU labels and times,
#                            a GPU-trained model reloaded on the CPU
#   bench.log, gpu_runs.tgz  python -m benchmarks --gpu-only (the default run's pybridge rows, on CUDA):
#                            runs/<task>/<tool>__gpu/row.json per call
# Phases stop at their time limits (BUDGET_S in all, default 540 s) and still return what finished.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
BUDGET_S="${BUDGET_S:-540}"
PY="${PYTHON:-python3}"  # on the GPU machine: the image's Python 3.12 with CUDA torch
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

[ -f .gpu/data.tgz ] || { echo "gpu_check: .gpu/data.tgz missing: run scripts/gpu_prepare.sh here and carry .gpu"; exit 2; }
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || { echo "gpu_check: installing the carried wheels failed"; exit 2; }
if ! "$PY" -c "import sys, pandas; sys.exit(int(pandas.__version__.split('.')[0]) >= 3)"; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/pandas/*.whl || { echo "gpu_check: installing pandas 2.3.3 failed"; exit 2; }
fi  # anndata 0.12 needs pandas < 3
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p /tmp/gpu_data && tar -xzf .gpu/data.tgz -C /tmp/gpu_data
DATA=/tmp/gpu_data/data

{ nvidia-smi -L 2>&1; "$PY" -c "import sys, torch, numpy, pandas, scipy, sklearn, anndata, pybridge
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '', '| numpy', numpy.__version__,
      '| pandas', pandas.__version__, '| scipy', scipy.__version__, '| sklearn', sklearn.__version__,
      '| anndata', anndata.__version__, '| pybridge', pybridge.__version__)"; } 2>&1 | tee "$OUT/versions.txt"

left() { local s=$(( BUDGET_S - SECONDS )); echo $(( s > 1 ? s : 1 )); }
echo "== device check (CUDA path of every method), $(left) s left"
timeout "$(( $(left) < 240 ? $(left) : 240 ))" "$PY" -m benchmarks.device_check --data "$DATA" \
  --device "${DEVICE:-cuda}" --out "$OUT/device_check.md" 2>&1 | tee "$OUT/device_check.log"
check_rc=${PIPESTATUS[0]}

echo "== GPU rows of the dev benchmark, $(left) s left"
BENCH=/tmp/bench_gpu
# the dev tasks whose data was carried (gpu_prepare.sh leaves pbmc3k out)
TASKS=$("$PY" -c "import sys; from pathlib import Path; from benchmarks import tasks as T
print(','.join(n for n in T.ANNOTATION_TASKS + T.CLUSTERING_SETS
               if all((Path(sys.argv[1]) / f'{f}.h5ad').exists() for f in T.files_of(n))))" "$DATA")
timeout "$(left)" "$PY" -m benchmarks --gpu-only --data "$DATA" --out "$BENCH" --tasks "$TASKS" --timeout 240 2>&1 \
   | tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}
if grep -q "Cannot re-initialize CUDA in forked subprocess" "$BENCH"/runs/*/*/log.txt 2>/dev/null \
   && [ "$(left)" -gt 60 ]; then  # forking from the zygote did not suit CUDA here: fresh processes instead
  echo "== again with --no-fork, $(left) s left"
  timeout "$(left)" "$PY" -m benchmarks --gpu-only --no-fork --resume --data "$DATA" --out "$BENCH" \
    --tasks "$TASKS" --timeout 240 2>&1 | tee -a "$OUT/bench.log"
  bench_rc=${PIPESTATUS[0]}
fi
[ -d "$BENCH/runs" ] && tar -czf "$OUT/gpu_runs.tgz" -C "$BENCH" runs $(cd "$BENCH" && ls results.csv 2>/dev/null)
echo "gpu_check: device check rc $check_rc, benchmark rc $bench_rc, $SECONDS s"
[ "$check_rc" = 0 ] && [ "$bench_rc" = 0 ]
