#!/usr/bin/env bash
# Render the R package's vignettes (vignettes/*.Rmd) to HTML in out/vignettes/,
# running every chunk against the installed R package and the Python in
# PYBRIDGE_PYTHON (default: .venv/bin/python). A missing Python is an error here
# (PYBRIDGE_VIGNETTE_REQUIRE=1), not a silently code-only vignette.
# Usage: bash scripts/build_vignettes.sh [out_dir]   (after scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/vignettes}
mkdir -p "$OUT"
export PYBRIDGE_PYTHON=${PYBRIDGE_PYTHON:-$(pwd)/.venv/bin/python}
export PYBRIDGE_VIGNETTE_REQUIRE=1
OUT_ABS=$(cd "$OUT" && pwd)
status=0
for rmd in vignettes/*.Rmd; do
  name=$(basename "$rmd" .Rmd)
  start=$(date +%s)
  # render in a scratch copy so knitr's intermediate files never land in vignettes/
  work=$(mktemp -d)
  cp "$rmd" "$work/"
  if Rscript -e "rmarkdown::render('$work/$name.Rmd', output_dir = '$OUT_ABS', quiet = TRUE)" >"$OUT_ABS/$name.log" 2>&1; then
    echo "== vignettes: $name.html ($(( $(date +%s) - start )) s)"
  else
    echo "== vignettes: $name FAILED; last lines of $OUT/$name.log:"; tail -n 30 "$OUT_ABS/$name.log"; status=1
  fi
  rm -rf "$work"
done
exit $status
