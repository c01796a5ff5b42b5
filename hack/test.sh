#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every check and test.
#   1. the Python package with its [dev,operator] extras (editable)
#   2. the native scanner (native/: Rust, PyO3, PCRE2): its wheel built into build/native-wheel/
#      (hack/native-wheel.sh; needs cargo, from rustup) and installed into the same environment
#   3. kube-apiserver, etcd, kubectl and helm, built from Go modules and cached (hack/ensure-tools.sh;
#      the first build takes a while, later runs are a no-op)
#   4. ruff, mypy --strict, import-linter, rustfmt and clippy (native/), the CRD freshness check
#   5. the sidecar and operator images (hack/build-images.sh: mmdebstrap + buildah, no daemon; the
#      bases are cached, unchanged images are not rebuilt); the sidecar image ships the same wheel
#   6. pytest (warnings are errors)
# Extra arguments go to pytest, e.g. `hack/test.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
step() { printf '\n==> %s\n' "$*"; }

step "installing sluicegate[dev,operator]"
"${PY}" -m pip install --disable-pip-version-check -q -e '.[dev,operator]'

step "the native scanner's wheel (native/; hack/native-wheel.sh), installed beside the package"
# Needs cargo (rustup's; the script says so and fails without it). Cold: cargo builds the crate
# and its dependencies (PyO3, PCRE2's C sources); warm: cargo's native/target/ makes it seconds.
native_start=${SECONDS}
PYTHON="${PY}" bash hack/native-wheel.sh >/dev/null
"${PY}" -m pip install --disable-pip-version-check -q --force-reinstall --no-deps \
    build/native-wheel/*.whl
"${PY}" -c 'import sluice_native'
echo "native wheel: $((SECONDS - native_start)) s"

step "Node.js for the Vercel AI SDK tests"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm
fi
node --version

step "building/locating the local control-plane tools"
bash hack/ensure-tools.sh

step "locating (or installing, once) the MLflow tracking server for the eval test"
SLUICE_MLFLOW="$(bash hack/ensure-mlflow.sh)"
export SLUICE_MLFLOW

step "ruff"
"${PY}" -m ruff check operator sidecar cli tests bench
"${PY}" -m ruff format --check operator sidecar cli tests bench

step "mypy --strict"
"${PY}" -m mypy operator/sluice_operator sidecar/sluice_sidecar cli/sluice_cli

step "import-linter"
lint-imports

step "rustfmt and clippy (native/)"
# cargo is there: the wheel step above fails without it (rustup puts it in ~/.cargo/bin).
if ! command -v cargo >/dev/null 2>&1; then
    PATH="${CARGO_HOME:-${HOME}/.cargo}/bin:${PATH}"
fi
# rustup's default profile has both; a minimal one may not, and they cannot be added offline:
# then this lint is skipped, loudly (the build and the tests still run).
if cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1; then
    (cd native && cargo fmt --check && PCRE2_SYS_STATIC=1 cargo clippy --release --quiet -- -D warnings)
else
    echo "WARNING: rustfmt or clippy is not installed (rustup component add rustfmt clippy):" \
        "the Rust lint of native/ is skipped" >&2
fi

step "CRDs and generated docs are current"
sluice crds --check
"${PY}" -m sluice_cli.maintainer docs

step "the sidecar and operator images (hack/build-images.sh; tests/images runs them)"
# Cold: the two Debian bases (mmdebstrap) and both images, a few minutes; warm: the bases come
# from ~/.cache/sluice/images and buildah's storage, unchanged images are not rebuilt.
images_start=${SECONDS}
# The native wheel is the one built above (SLUICE_NATIVE_WHEEL_DIR: not built again).
SLUICE_NATIVE_WHEEL_DIR=build/native-wheel bash hack/build-images.sh
echo "images: $((SECONDS - images_start)) s"

step "pytest"
"${PY}" -m pytest "$@"
