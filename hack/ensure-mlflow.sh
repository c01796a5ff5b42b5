#!/usr/bin/env bash
# Installs the MLflow tracking server the `sluice eval --mlflow` test talks to, in a virtualenv
# of its own (about 850 MB; it never touches the project's environment), at the version pinned in
# hack/versions.env, and prints the path of its `mlflow` executable. Fast no-op when cached.
#
# Usage: export SLUICE_MLFLOW="$(hack/ensure-mlflow.sh)"
# Env:   SLUICE_CACHE (default ~/.cache/sluice) - where the virtualenv lives.
set -euo pipefail
HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HACK}/versions.env"
CACHE="${SLUICE_CACHE:-${HOME}/.cache/sluice}"
VENV="${CACHE}/mlflow-${MLFLOW_VERSION}"
PY="${PYTHON:-python3}"

# A virtualenv cannot be moved (its scripts name its interpreter by path): it is built in place
# and marked complete last, so an interrupted install is redone.
if [[ ! -f "${VENV}/.complete" ]]; then
    mkdir -p "${CACHE}/locks"
    (
        flock 9
        if [[ ! -f "${VENV}/.complete" ]]; then
            printf '[hack %s] installing mlflow %s into %s\n' "$(date +%H:%M:%S)" \
                "${MLFLOW_VERSION}" "${VENV}" >&2
            rm -rf "${VENV}"
            "${PY}" -m venv "${VENV}"
            "${VENV}/bin/pip" install --disable-pip-version-check -q \
                "mlflow==${MLFLOW_VERSION}" >&2
            touch "${VENV}/.complete"
        fi
    ) 9>"${CACHE}/locks/mlflow.lock"
fi
echo "${VENV}/bin/mlflow"
