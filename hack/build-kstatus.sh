#!/usr/bin/env bash
# Builds hack/kstatus (a small program around Flux's kstatus library, sigs.k8s.io/cli-utils) into
# ${SLUICE_CACHE:-~/.cache/sluice}/bin/kstatus-<hash of its sources>/kstatus and prints that path.
# A no-op when already built. The cluster tests run it to read Sluice objects as Flux does.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC="${HACK_DIR}/kstatus"
KEY="$(cat "${SRC}/go.mod" "${SRC}/go.sum" "${SRC}/main.go" | sha256sum | cut -c1-12)"
OUT="$(tool_dir kstatus "${KEY}")"

build() {
    if [[ -x "${OUT}/kstatus" ]]; then
        return 0
    fi
    local start=${SECONDS}
    log "building kstatus (${KEY})"
    local tmp="${OUT}.tmp.$$"
    rm -rf "${OUT}".tmp.*  # leftovers of an interrupted build (we hold the lock)
    mkdir -p "${tmp}"
    (cd "${SRC}" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "${tmp}/kstatus" .)
    finish_install "${tmp}" "${OUT}"
    log "built kstatus in $((SECONDS - start))s -> ${OUT}"
}

with_lock "kstatus" build
echo "${OUT}/kstatus"
