#!/usr/bin/env bash
# Shared helpers for the hack/ build scripts: pinned versions, cache layout, locking, logging.
# Sourced, not executed.

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HACK_DIR}/versions.env"

SLUICE_CACHE="${SLUICE_CACHE:-${HOME}/.cache/sluice}"
CACHE_BIN="${SLUICE_CACHE}/bin"
CACHE_BUILD="${SLUICE_CACHE}/build"

# Keep two compile jobs at most: the kube-apiserver link alone needs a few GB.
export GOFLAGS="${GOFLAGS:-} -p=2"
export CGO_ENABLED=0

log() { printf '[hack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go >= 1.26 is needed to build the tools)"

# tool_dir NAME VERSION -> directory that holds a finished build of that tool.
tool_dir() { printf '%s/%s-%s' "${CACHE_BIN}" "$1" "$2"; }

# with_lock NAME CMD... : run CMD under an exclusive lock so concurrent callers
# (two test sessions, a test session and a shell) build each tool only once.
with_lock() {
    local name="$1"; shift
    mkdir -p "${SLUICE_CACHE}/locks"
    (
        flock -x 9
        "$@"
    ) 9>"${SLUICE_CACHE}/locks/${name}.lock"
}

# finish_install TMPDIR FINALDIR : atomically publish a finished build.
finish_install() {
    local tmp="$1" final="$2"
    rm -rf "${final}"
    mv "${tmp}" "${final}"
}
