#!/usr/bin/env bash
# Builds helm at HELM_VERSION into ${SLUICE_CACHE:-~/.cache/sluice}/bin/helm-<version>/helm.
# A no-op when already built.
#
# helm.sh/helm/v3 has no replace directives, so `go install` works. Its Makefile stamps the
# version and the default Kubernetes version (used by `helm template` for .Capabilities) with
# -ldflags; without them helm reports an empty version and an old Kubernetes. We set the same
# variables, deriving the Kubernetes version from helm's own k8s.io/client-go requirement as the
# Makefile does.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

V="${HELM_VERSION}"
OUT="$(tool_dir helm "${V}")"

build() {
    if [[ -x "${OUT}/helm" ]]; then
        return 0
    fi
    local start=${SECONDS}
    log "building helm ${V}"
    local work="${CACHE_BUILD}/helm-${V}"
    mkdir -p "${work}"
    cd "${work}"

    local gomod_path client_go major minor
    gomod_path="$(go mod download -json "helm.sh/helm/v3@${V}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
    [[ -f "${gomod_path}" ]] || die "could not find go.mod of helm.sh/helm/v3@${V}"
    client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "${gomod_path}")"
    [[ "${client_go}" =~ ^v0\.([0-9]+)\. ]] || die "cannot parse helm's k8s.io/client-go version '${client_go}'"
    major=1
    minor="${BASH_REMATCH[1]}"

    local ldflags="-s -w"
    ldflags+=" -X helm.sh/helm/v3/internal/version.version=${V}"
    ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    local pkg
    for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldflags+=" -X ${pkg}.k8sVersionMajor=${major} -X ${pkg}.k8sVersionMinor=${minor}"
    done

    local tmp="${OUT}.tmp.$$"
    rm -rf "${OUT}".tmp.*  # leftovers of an interrupted build (we hold the lock)
    mkdir -p "${tmp}"
    GOBIN="${tmp}" go install -trimpath -ldflags "${ldflags}" "helm.sh/helm/v3/cmd/helm@${V}"
    "${tmp}/helm" version --short | grep -q "^${V}" \
        || die "unexpected helm version: $("${tmp}/helm" version --short)"
    finish_install "${tmp}" "${OUT}"
    log "built helm ${V} in $((SECONDS - start))s -> ${OUT}"
}

with_lock "helm-${V}" build
echo "${OUT}"
