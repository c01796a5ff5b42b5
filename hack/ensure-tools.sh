#!/usr/bin/env bash
# Entry point: builds every missing tool (kube-apiserver, kubectl, etcd, helm) at the versions
# pinned in hack/versions.env, and prints ONE directory holding all of them (symlinks into the
# per-tool, per-version build directories). Fast no-op when everything is cached.
#
# Usage: hack/ensure-tools.sh            # prints e.g. ~/.cache/sluice/bin/sluice-k8s-v1.36.3-etcd-v3.6.16-helm-v3.22.0
#        export PATH="$(hack/ensure-tools.sh):$PATH"
# Env:   SLUICE_CACHE (default ~/.cache/sluice) - where binaries and build dirs live.
set -euo pipefail
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "${HACK}/lib.sh"

BIN="${CACHE_BIN}/sluice-k8s-${KUBERNETES_VERSION}-etcd-${ETCD_VERSION}-helm-${HELM_VERSION}"

have_all() {
    local t
    for t in kube-apiserver kubectl etcd helm; do
        [[ -x "${BIN}/${t}" ]] || return 1
    done
}

if ! have_all; then
    # Each build script prints its output directory on stdout; logs go to stderr.
    # Sequential on purpose: the machine has 2 cores, and kube-apiserver's link needs memory.
    kube_dir="$("${HACK}/build-kubernetes.sh")"
    etcd_dir="$("${HACK}/build-etcd.sh")"
    helm_dir="$("${HACK}/build-helm.sh")"
    mkdir -p "${BIN}"
    ln -sfn "${kube_dir}/kube-apiserver" "${BIN}/kube-apiserver"
    ln -sfn "${kube_dir}/kubectl" "${BIN}/kubectl"
    ln -sfn "${etcd_dir}/etcd" "${BIN}/etcd"
    ln -sfn "${helm_dir}/helm" "${BIN}/helm"
    have_all || die "tools missing from ${BIN} after building"
fi
echo "${BIN}"
