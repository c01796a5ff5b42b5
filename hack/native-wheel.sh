#!/usr/bin/env bash
# Puts the native scanner's wheel (native/: Rust, PyO3, PCRE2, built with maturin; the optional
# distribution sluice-native, module sluice_native) in build/native-wheel/, the only wheel there.
# hack/test.sh installs it into the test environment; hack/build-images.sh has it copied into the
# sidecar image (.dockerignore admits build/native-wheel/*.whl and nothing else of build/).
#
#   hack/native-wheel.sh              builds it: `pip wheel ./native` (needs cargo, from rustup;
#                                     Debian's rustc is too old). cargo keeps native/target/, so
#                                     an unchanged crate rebuilds in seconds.
#   hack/native-wheel.sh --from DIR   takes the one sluice_native-*.whl already in DIR instead.
#
# PCRE2 is compiled into the extension (PCRE2_SYS_STATIC=1), never linked to a libpcre2 of the
# build machine: the sidecar image has none. The wheel already in build/native-wheel/ is kept when
# the new one has the same contents: maturin writes an SBOM with a new serial number and timestamp
# into every wheel, and a new file each run would change the sidecar image's inputs every run.
# Prints the wheel's path on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-python3}"
OUT=build/native-wheel
log() { printf '%s\n' "$*" >&2; }

one_wheel() { # $1: directory; prints its one sluice_native wheel or fails
    local found=("$1"/sluice_native-*.whl)
    if [[ ${#found[@]} != 1 || ! -f ${found[0]} ]]; then
        log "$0: expected exactly one sluice_native-*.whl in $1, found: ${found[*]}"
        return 1
    fi
    echo "${found[0]}"
}

# The wheel's contents but the SBOM (and RECORD, which holds the SBOM's hash).
contents() {
    "${PY}" - "$1" <<'EOF'
import hashlib, sys, zipfile
digest = hashlib.sha256()
with zipfile.ZipFile(sys.argv[1]) as zf:
    for name in sorted(zf.namelist()):
        if "/sboms/" not in name and not name.endswith(".dist-info/RECORD"):
            digest.update(name.encode() + b"\0" + hashlib.sha256(zf.read(name)).digest())
print(digest.hexdigest())
EOF
}

mkdir -p "${OUT}"
new="$(mktemp -d build/native-wheel.XXXXXX)"
trap 'rm -rf "${new}"' EXIT
if [[ ${1:-} == --from ]]; then
    [[ -n ${2:-} ]] || { log "usage: $0 [--from DIR]"; exit 2; }
    from="$(one_wheel "$2")"
    cp "${from}" "${new}/"
else
    if ! command -v cargo >/dev/null 2>&1 && [[ -x ${CARGO_HOME:-${HOME}/.cargo}/bin/cargo ]]; then
        PATH="${CARGO_HOME:-${HOME}/.cargo}/bin:${PATH}"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        log "$0: cargo not found. The native scanner (native/) is a Rust crate: install Rust's"
        log "toolchain with rustup (https://rustup.rs; Debian's rustc is too old), which puts cargo"
        log "in ~/.cargo/bin, then run this again."
        exit 1
    fi
    log "building the native scanner's wheel (pip wheel ./native)"
    PCRE2_SYS_STATIC=1 "${PY}" -m pip wheel --disable-pip-version-check -q --no-deps \
        -w "${new}" ./native >&2
fi
wheel="$(one_wheel "${new}")"
old="$(one_wheel "${OUT}" 2>/dev/null || true)"
if [[ -n ${old} && $(basename "${old}") == $(basename "${wheel}") ]] \
    && [[ $(contents "${old}") == $(contents "${wheel}") ]]; then
    log "${old} is unchanged"
    echo "${old}"
    exit 0
fi
rm -f "${OUT}"/*.whl
mv "${wheel}" "${OUT}/"
echo "${OUT}/$(basename "${wheel}")"
