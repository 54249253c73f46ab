#!/usr/bin/env bash
# The trixie lane: run a command against today's R/Python stack (Debian trixie:
# R 4.5, Seurat 5, reticulate 1.41, Python 3.13, torch 2.6, numpy 2) from this
# bookworm machine, in a chroot cached outside the clone. Run as root.
# The chroot's packages are listed in scripts/lane-packages.txt; see usage() below.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash scripts/lane.sh [--rebuild] -- CMD [ARGS...]
       bash scripts/lane.sh [--rebuild] --info
       bash scripts/lane.sh --help

Runs CMD in the "trixie lane", a Debian trixie chroot with today's R/Python
stack (R 4.5, Seurat 5, reticulate, Python 3.13, torch, numpy 2; the list is
scripts/lane-packages.txt). Must run as root.

  --           what follows is the command, run in the lane with the project
               root bind-mounted at its own path; the working directory is the
               current one if it lies inside the project, else the project root
  --info       print the versions of R, Seurat, SeuratObject, reticulate,
               SingleCellExperiment, Python, torch, numpy, anndata, anndata2ri,
               rpy2 (and a few more) in the lane
  --rebuild    rebuild the lane from scratch first (waits for running lane runs)
  -h, --help   this text

The lane is built on first use (debootstrap + apt + pip, a few minutes, ~3 GB)
under $PYBRIDGE_LANE_CACHE (default /var/cache/pybridge-lane), one directory
per hash of the package list and build recipe, and rebuilt only when either
changes. Each run installs the working tree's pybridge (the R package into
/opt/pybridge-R-lib, the Python package, non-editable, into the venv
/opt/pybridge-venv) unless that tree is unchanged since the last install.

In CMD's environment: PYBRIDGE_PYTHON=/opt/pybridge-venv/bin/python,
R_LIBS_USER=/opt/pybridge-R-lib, PYBRIDGE_LANE=<lane hash>, PATH starting with
the venv's bin/, HOME=/root, LANG=C.UTF-8; passed through from the caller: TERM,
TZ, CI, NOT_CRAN, *_NUM_THREADS, PYBRIDGE_*, TESTTHAT_*, PYTEST_*, _R_CHECK_*,
proxy and PIP_* index variables, and the names listed in $PYBRIDGE_LANE_ENV.
Mounted (in a private mount namespace, so nothing outlives the run): /proc,
/sys, /dev, /tmp, the project root, and ../shared read-only if present.

Exit status: CMD's; 125 when the lane itself fails; 2 for a usage error.
Environment: PYBRIDGE_LANE_CACHE (cache folder), PYBRIDGE_LANE_MIRROR (Debian
archive URL; default: the one the host's apt uses).
EOF
}

SELF=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPTS=$(dirname "$SELF")
ROOT=$(cd "$SCRIPTS/.." && pwd -P)
PKG_FILE=$SCRIPTS/lane-packages.txt
CACHE=${PYBRIDGE_LANE_CACHE:-/var/cache/pybridge-lane}
SUITE=trixie
VENV=/opt/pybridge-venv
RLIB=/opt/pybridge-R-lib
STAMP=/etc/pybridge-lane
LANE_PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

say() { echo "== lane: $*" >&2; }
die() { say "ERROR: $*"; exit 125; }

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mounts)"

# Remove mounts under the cache left in the host's namespace (e.g. by a killed
# run of an older version or by hand); runs never mount there themselves.
clean_stale_mounts() {
  local m
  [ -d "$CACHE" ] || return 0
  awk -v c="$CACHE/" 'index($5, c) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do
      say "unmounting stale $m"
      umount -l "$m" 2>/dev/null || true
    done
}

# Re-run this script in a private mount namespace: every mount the lane makes
# lives there and disappears with the run, even if the run is killed. Also
# reset SIGINT/SIGQUIT (a background job started by a script ignores them) so
# that an interrupt always reaches the traps below.
if [ "${_PYBRIDGE_LANE_NS:-}" != "$$" ]; then
  clean_stale_mounts
  command -v unshare >/dev/null && command -v flock >/dev/null || die "needs util-linux (unshare, flock)"
  export _PYBRIDGE_LANE_NS=$$
  exec env --default-signal=INT,QUIT unshare --mount --propagation private -- /bin/bash "$SELF" "$@"
fi
unset _PYBRIDGE_LANE_NS

rebuild=0 info=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) rebuild=1; shift ;;
    --info) info=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; exit 2 ;;
  esac
done
if [ "$info" = 1 ]; then
  [ $# -eq 0 ] || { usage >&2; exit 2; }
elif [ $# -eq 0 ]; then
  usage >&2; exit 2
fi
[ -f "$PKG_FILE" ] || die "missing $PKG_FILE"

# ---------------------------------------------------------------- helpers

deb_packages() { sed 's/#.*//' "$PKG_FILE" | awk '$1 != "pip:" { for (i = 1; i <= NF; i++) print $i }'; }
pip_packages() { sed 's/#.*//' "$PKG_FILE" | awk '$1 == "pip:" { for (i = 2; i <= NF; i++) print $i }'; }

MOUNTS=()
do_mount() { mount "$@"; MOUNTS+=("${*: -1}"); }
umount_all() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount -R "${MOUNTS[i]}" 2>/dev/null || umount -R -l "${MOUNTS[i]}" 2>/dev/null || true
  done
  MOUNTS=()
}

# Signal every other process in this run's mount namespace: they are all ours
# (the namespace is private to this run). Sets NPROCS to how many there were.
signal_ours() {
  local p
  NPROCS=0
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    [[ /proc/$p/ns/mnt -ef /proc/$$/ns/mnt ]] || continue
    kill -s "$1" "$p" 2>/dev/null && NPROCS=$((NPROCS + 1))
  done
  return 0
}
stop_ours() {
  local i
  signal_ours TERM
  [ "$NPROCS" = 0 ] && return 0
  for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    sleep 0.1; signal_ours 0; [ "$NPROCS" = 0 ] && return 0
  done
  signal_ours KILL
}

LANE_ENVS=()
cleanup() {
  trap - INT TERM HUP
  stop_ours
  umount_all
  if [ "$PHASE" = build ]; then   # an interrupted or failed build
    rm -rf --one-file-system "$LANE.partial"
    say "build log: $LANE.partial.log"
  fi
}
PHASE=setup CHILD='' SIGNALS=0
on_signal() {
  local sig=$1
  SIGNALS=$((SIGNALS + 1))
  if [ "$PHASE" = cmd ] && [ -n "$CHILD" ]; then
    # pass the signal on to CMD and keep waiting for it; a second one kills
    if [ "$SIGNALS" -gt 1 ]; then signal_ours KILL; else kill -s "$sig" "$CHILD" 2>/dev/null || true; fi
    return 0
  fi
  say "interrupted ($sig)"
  exit $((128 + $(kill -l "$sig")))
}
trap cleanup EXIT
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP

# Debian archive (and security archive) the host's apt uses.
host_uris() {
  { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }'
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }'
  } | grep -E "$1" | head -n 1 || true
}

# pip settings for the lane: the caller's PIP_* variables, else the host's pip
# config files; only http(s) indexes (local file:// ones do not exist in the chroot).
pip_conf_get() {
  local f w v=''
  for f in /etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.pip/pip.conf" "$HOME/.config/pip/pip.conf" ${PIP_CONFIG_FILE:-}; do
    [ -f "$f" ] || continue
    w=$(awk -v k="$1" '/^\[/ { s = $0 }
      s ~ /^\[(global|install)\]/ && $0 ~ "^[ \t]*" k "[ \t]*=" { sub(/^[^=]*=[ \t]*/, ""); v = $0 }
      END { print v }' "$f")
    [ -z "$w" ] || v=$w
  done
  echo "$v"
}
pip_env() {
  local k var v w out
  for k in index-url extra-index-url trusted-host default-timeout; do
    var=PIP_$(echo "$k" | tr 'a-z-' 'A-Z_')
    v=${!var:-}
    [ -n "$v" ] || v=$(pip_conf_get "$k")
    case "$k" in *url)
      out=''
      for w in $v; do case "$w" in http://*|https://*) out="$out $w" ;; esac; done
      v=${out# } ;;
    esac
    [ -z "$v" ] || echo "$var=$v"
  done
  echo PIP_DISABLE_PIP_VERSION_CHECK=1
}

# Host settings the chroot needs to reach the network: DNS, hosts, the host's
# extra CA certificates (e.g. a proxy's), apt's Acquire settings (proxy etc.).
sync_host_config() {
  local c=$1 f changed=0
  for f in /etc/resolv.conf /etc/hosts; do
    [ -e "$f" ] || continue
    cmp -s "$f" "$c$f" 2>/dev/null || { rm -f "$c$f"; cp -L "$f" "$c$f"; }
  done
  mkdir -p "$c/usr/local/share/ca-certificates"
  for f in /usr/local/share/ca-certificates/*; do
    [ -f "$f" ] || continue
    cmp -s "$f" "$c$f" 2>/dev/null || { cp -L "$f" "$c$f"; changed=1; }
  done
  if [ "$changed" = 1 ] && [ -x "$c/usr/sbin/update-ca-certificates" ]; then
    chroot "$c" /usr/bin/env -i PATH="$LANE_PATH" update-ca-certificates >/dev/null 2>&1 || true
  fi
  for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && grep -qi 'Acquire::' "$f" && ! cmp -s "$f" "$c/etc/apt/apt.conf.d/${f##*/}" &&
      cp "$f" "$c/etc/apt/apt.conf.d/${f##*/}"
  done
  return 0
}

# Environment given to commands in the chroot (printed one VAR=value a line).
lane_env() {
  local v
  echo HOME=/root; echo USER=root; echo LOGNAME=root; echo SHELL=/bin/bash
  echo LANG=C.UTF-8; echo PATH="$LANE_PATH"; echo TERM="${TERM:-dumb}"
  for v in $(compgen -e); do
    case "$v" in
      PYBRIDGE_PYTHON|PYBRIDGE_LANE|PYBRIDGE_LANE_CACHE|PYBRIDGE_LANE_MIRROR|PYBRIDGE_LANE_ENV) ;;
      PYBRIDGE_*|TESTTHAT_*|PYTEST_*|_R_CHECK_*|*_NUM_THREADS|TZ|CI|NOT_CRAN|NO_COLOR|COLUMNS|LINES \
      |http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY)
        printf '%s=%s\n' "$v" "${!v}" ;;
    esac
  done
  for v in ${PYBRIDGE_LANE_ENV:-}; do
    [ -n "${!v+x}" ] && printf '%s=%s\n' "$v" "${!v}"
  done
  pip_env
  echo PYBRIDGE_PYTHON="$VENV/bin/python"
  echo R_LIBS_USER="$RLIB"
  echo PYBRIDGE_LANE="$HASH"
}

# mount_lane DIR build|run
mount_lane() {
  local c=$1
  do_mount -t proc proc "$c/proc"
  do_mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$c/sys" 2>/dev/null || do_mount --rbind /sys "$c/sys"
  do_mount --rbind /dev "$c/dev"
  [ "$2" = run ] || return 0
  do_mount --bind /tmp "$c/tmp"
  mkdir -p "$c$ROOT"
  do_mount --bind "$ROOT" "$c$ROOT"
  if [ -d "$ROOT/../shared" ]; then
    local shared
    shared=$(cd "$ROOT/../shared" && pwd -P)
    case "$shared/" in "$ROOT"/*) ;; *)
      mkdir -p "$c$shared"
      do_mount --bind -o ro "$shared" "$c$shared" ;;
    esac
  fi
}

# Run a command in the chroot with the lane environment, as a child we wait on
# (so that signals are handled promptly); stdin passes through; the command is
# killed if this script is (SIGKILL included).
in_chroot() {
  local c=$1 rc; shift
  [ ${#LANE_ENVS[@]} -gt 0 ] || mapfile -t LANE_ENVS < <(lane_env)
  setpriv --pdeathsig KILL chroot "$c" /usr/bin/env -i --default-signal=INT,QUIT "${LANE_ENVS[@]}" "$@" <&0 8>&- 9>&- &
  CHILD=$!
  while :; do
    rc=0; wait "$CHILD" || rc=$?
    kill -0 "$CHILD" 2>/dev/null || break
  done
  CHILD=''
  return "$rc"
}

# ---------------------------------------------------------------- the build

ensure_debootstrap() {
  [ -x /usr/sbin/debootstrap ] && [ -e "/usr/share/debootstrap/scripts/$SUITE" ] && return 0
  say "installing debootstrap on the host"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } ||
    die "could not install debootstrap"
  [ -e "/usr/share/debootstrap/scripts/$SUITE" ] || die "this debootstrap does not know $SUITE"
}

# build_lane DIR LOG: debootstrap trixie into DIR and install the package list.
build_lane() {
  local t=$1 log=$2 mirror security missing
  local -a debs pips
  mapfile -t debs < <(deb_packages)
  mapfile -t pips < <(pip_packages)
  mirror=${PYBRIDGE_LANE_MIRROR:-$(host_uris '/debian/?$')}
  mirror=${mirror:-http://deb.debian.org/debian}
  security=$(host_uris '/debian-security/?$')
  security=${security:-http://deb.debian.org/debian-security}
  ensure_debootstrap

  say "debootstrap $SUITE (minbase) from $mirror"
  rm -rf --one-file-system "$t"
  debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$t" "$mirror" >>"$log" 2>&1 ||
    { tail -n 20 "$log" >&2; die "debootstrap failed (log: $log)"; }

  rm -f "$t/etc/apt/sources.list"
  cat >"$t/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  printf '#!/bin/sh\nexit 101\n' >"$t/usr/sbin/policy-rc.d"; chmod 755 "$t/usr/sbin/policy-rc.d"
  sync_host_config "$t"
  mount_lane "$t" build

  say "apt-get install ${#debs[@]} packages"
  in_chroot "$t" apt-get update >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "apt-get update failed (log: $log)"; }
  missing=$(chroot "$t" apt-cache policy "${debs[@]}" 2>/dev/null |
    awk '/^[^ ].*:$/ { sub(/:$/, ""); p = $0 } /^  Candidate:/ && $2 != "(none)" { print p }' |
    sort -u | comm -23 <(printf '%s\n' "${debs[@]}" | sort -u) - | tr '\n' ' ')
  [ -z "$missing" ] || die "not in Debian $SUITE: $missing(edit $PKG_FILE)"
  in_chroot "$t" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Use-Pty=0 "${debs[@]}" >>"$log" 2>&1 ||
    { tail -n 30 "$log" >&2; die "apt-get install failed (log: $log)"; }
  in_chroot "$t" apt-get clean >>"$log" 2>&1

  say "venv $VENV (system site packages) + pip: ${pips[*]}"
  in_chroot "$t" python3 -m venv --system-site-packages "$VENV" >>"$log" 2>&1 || die "venv failed (log: $log)"
  # pin what Debian ships, so that pip adds only what is missing (a name given
  # on a pip: line is not pinned: that line may replace Debian's version)
  in_chroot "$t" python3 -c '
import importlib.metadata as m, re, sys
from packaging.version import Version
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
seen = {norm(re.split(r"[<>=!~;\[ ]", a)[0]) for a in sys.argv[1:]}
for d in m.distributions(path=["/usr/lib/python3/dist-packages"]):
    n, v = d.metadata["Name"], d.version
    if not n or norm(n) in seen: continue
    try: Version(v)
    except Exception: continue
    seen.add(norm(n)); print(f"{n}=={v}")' "${pips[@]}" >"$t/etc/pybridge-lane-debian-constraints.txt" 2>>"$log" ||
    die "could not list Debian's Python packages (log: $log)"
  if [ ${#pips[@]} -gt 0 ]; then
    in_chroot "$t" "$VENV/bin/python" -m pip install --progress-bar off \
      -c /etc/pybridge-lane-debian-constraints.txt "${pips[@]}" >>"$log" 2>&1 ||
      { tail -n 30 "$log" >&2; die "pip install failed (log: $log)"; }
  fi
  mkdir -p "$t$RLIB"

  say "checking the lane's R and Python packages"
  in_chroot "$t" "$VENV/bin/python" -c \
    'import torch, numpy, scipy, pandas, anndata, safetensors, sklearn, tqdm, h5py, rpy2.robjects, anndata2ri, pytest, matplotlib' \
    >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "Python packages do not import (log: $log)"; }
  in_chroot "$t" Rscript -e '
pk <- c("Seurat", "SeuratObject", "reticulate", "SingleCellExperiment", "SummarizedExperiment",
        "S4Vectors", "scuttle", "scater", "BiocStyle", "cli", "jsonlite", "Matrix", "testthat",
        "withr", "roxygen2", "knitr", "rmarkdown", "ggplot2", "gridExtra")
bad <- pk[!vapply(pk, requireNamespace, logical(1), quietly = TRUE)]
if (length(bad)) stop("R packages that do not load: ", paste(bad, collapse = ", "))' \
    >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "R packages do not load (log: $log)"; }
  umount_all
  echo "$HASH built $(date -u +%FT%TZ) from $mirror" >"$t$STAMP"
}

# Hash of the package list (comments dropped) and of the build recipe.
recipe_hash() {
  { echo "suite=$SUITE venv=$VENV rlib=$RLIB"
    deb_packages; pip_packages
    declare -f build_lane mount_lane sync_host_config ensure_debootstrap
  } | sha256sum | cut -c1-16
}

lane_complete() { [ -f "$LANE$STAMP" ]; }

# Remove partial builds and lanes of other hashes (under the exclusive lock,
# so no run is using them; runs never leave mounts in the host's namespace).
prune_lanes() {
  local d
  for d in "$CACHE"/*; do
    [ -d "$d" ] && [ "$d" != "$LANE" ] || continue
    case "${d##*/}" in
      [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*) ;;
      *) continue ;;
    esac
    grep -q " ${d}[/ ]" /proc/self/mountinfo && continue
    say "removing old lane ${d##*/}"
    rm -rf --one-file-system "$d"
    rm -f "$d.build.log" "$d.partial.log" "$d.install.lock" "$d.install.log"
  done
}

do_build() {
  local t="$LANE.partial" log="$LANE.partial.log" t0=$SECONDS
  : >"$log"
  say "building the $SUITE lane $HASH in $LANE (log: $log)"
  PHASE=build
  build_lane "$t" "$log"
  PHASE=setup
  if [ -d "$LANE" ]; then
    rm -rf --one-file-system "$LANE.old"
    mv "$LANE" "$LANE.old"
  fi
  mv "$t" "$LANE"
  mv "$log" "$LANE.build.log"
  say "lane built in $((SECONDS - t0)) s ($(du -sh --one-file-system "$LANE" 2>/dev/null | cut -f1))"
  prune_lanes
}

# ---------------------------------------------------------------- pybridge

# Hash of the files an install uses, and the project root they came from.
tree_hash() {
  (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 2>/dev/null |
     LC_ALL=C sort -z | xargs -0 -r sha256sum; echo "$ROOT") | sha256sum | cut -c1-32
}

install_pybridge() {
  local c=$LANE h tmp f log
  local -a rfiles pyfiles
  exec 9>"$LANE.install.lock"
  flock -x 9
  for f in DESCRIPTION NAMESPACE R inst man data src; do [ -e "$ROOT/$f" ] && rfiles+=("$f"); done
  for f in pyproject.toml setup.py setup.cfg MANIFEST.in README.md README.rst LICENSE pybridge; do
    [ -e "$ROOT/$f" ] && pyfiles+=("$f")
  done
  log=$LANE.install.log
  if [ -f "$ROOT/DESCRIPTION" ]; then
    h=$(tree_hash "${rfiles[@]}")
    if [ "$(cat "$c$RLIB/.pybridge-tree" 2>/dev/null)" != "$h" ]; then
      say "R CMD INSTALL pybridge -> $RLIB"
      in_chroot "$c" R CMD INSTALL --no-multiarch --library="$RLIB" "$ROOT" >"$log" 2>&1 ||
        { cat "$log" >&2; die "R CMD INSTALL failed"; }
      echo "$h" >"$c$RLIB/.pybridge-tree"
    fi
  fi
  if [ -f "$ROOT/pyproject.toml" ]; then
    h=$(tree_hash "${pyfiles[@]}")
    if [ "$(cat "$c$VENV/.pybridge-tree" 2>/dev/null)" != "$h" ]; then
      say "pip install pybridge (non-editable) -> $VENV"
      # build from a copy (in the lane, under the install lock): no build/ or
      # egg-info in the project
      tmp=/var/tmp/pybridge-src
      rm -rf "$c$tmp"; mkdir -p "$c$tmp"
      tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - "${pyfiles[@]}" |
        tar -C "$c$tmp" -xf -
      in_chroot "$c" "$VENV/bin/python" -m pip install --no-deps --no-build-isolation --no-index \
        --force-reinstall --progress-bar off "$tmp" >"$log" 2>&1 ||
        { cat "$log" >&2; die "pip install of pybridge failed"; }
      rm -rf "$c$tmp"
      echo "$h" >"$c$VENV/.pybridge-tree"
    fi
  fi
  flock -u 9; exec 9>&-
}

# ---------------------------------------------------------------- main

mkdir -p "$CACHE"
HASH=$(recipe_hash)
LANE=$CACHE/$HASH
exec 8>"$CACHE/.lock"
# Builds and prunes hold the lock exclusively, runs hold it shared.
while :; do
  if [ "$rebuild" = 0 ]; then
    flock -s -n 8 || { say "waiting for a lane build to finish"; flock -s 8; }
    lane_complete && break
  fi
  flock -x -n 8 || { say "waiting for other lane runs to finish"; flock -x 8; }
  if [ "$rebuild" = 1 ] || ! lane_complete; then
    do_build
    rebuild=0
  fi
  flock -s 8
  lane_complete && break
done

t0=$SECONDS
sync_host_config "$LANE"
mount_lane "$LANE" run
install_pybridge
[ "$((SECONDS - t0))" -lt 3 ] || say "lane ready in $((SECONDS - t0)) s"

if [ "$info" = 1 ]; then
  set -- /bin/sh -c '
. /etc/os-release
printf "%-22s %s\n" lane "$PYBRIDGE_LANE ($1)" Debian "$PRETTY_NAME"
Rscript -e "$2"
"$PYBRIDGE_PYTHON" -c "$3"' sh "$LANE" '
cat(sprintf("%-22s %s\n", "R", paste(R.version$major, R.version$minor, sep = ".")))
for (p in c("Seurat", "SeuratObject", "reticulate", "SingleCellExperiment", "Matrix", "testthat", "pybridge"))
  cat(sprintf("%-22s %s\n", p, tryCatch(format(packageVersion(p)), error = function(e) "MISSING")))' '
import sys, importlib.metadata as m
print("%-22s %s (%s)" % ("Python", sys.version.split()[0], sys.executable))
for d in ["torch", "numpy", "scipy", "pandas", "anndata", "anndata2ri", "rpy2", "pybridge"]:
    try:
        dist = m.distribution(d)
        where = "Debian" if str(dist.locate_file("")).startswith("/usr/lib/python3/") else "pip"
        print("%-22s %s (%s)" % (d, dist.version, where))
    except m.PackageNotFoundError:
        print("%-22s MISSING" % d)'
fi

wd=$ROOT
case "$PWD/" in "$ROOT"/*) wd=$PWD ;; esac
PHASE=cmd
rc=0
in_chroot "$LANE" /bin/sh -c 'cd "$0" && exec "$@"' "$wd" "$@" || rc=$?
PHASE=finished
exit "$rc"
