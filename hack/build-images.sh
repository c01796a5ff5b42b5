#!/usr/bin/env bash
# Builds the sidecar and operator images with no container daemon and no registry:
#   1. two bases from Debian bookworm packages with mmdebstrap, committed with buildah:
#        sluice-base-build    python3, python3-venv, a shell, gcc and Python's headers: the
#                             Dockerfiles' build stage
#        sluice-base-runtime  the interpreter and its standard library, libc, OpenSSL and Debian's
#                             CA bundle; no shell, no package manager, no docs, man pages or
#                             locales: the Dockerfiles' final stage
#      They are kept (tarballs under ~/.cache/sluice/images, images in buildah's storage) keyed by
#      a hash of their recipe below, so warm runs skip this step; --refresh-bases rebuilds them
#      (for Debian's security updates).
#   2. `buildah bud` of sidecar/Dockerfile and operator/Dockerfile on those bases (layer cache on:
#      an unchanged tree rebuilds nothing, a code change reinstalls only the project, not its
#      dependencies), tagged
#        ghcr.io/sluice-dev/sluice-sidecar:<version>   ghcr.io/sluice-dev/sluice-operator:<version>
#      <version> is pyproject.toml's version, which is the chart's appVersion (the chart's default
#      image references); labels org.opencontainers.image.{title,version,revision,source}.
#      Before the sidecar: the native scanner's wheel (native/: Rust, PyO3, PCRE2) in
#      build/native-wheel/, which sidecar/Dockerfile installs. The build base has no Rust toolchain
#      (Debian's rustc is too old), so it is built here on the host, whose glibc is the image's
#      (Debian 12), by hack/native-wheel.sh: `pip wheel ./native`, which needs cargo (rustup's);
#      cargo keeps native/target/, so an unchanged crate takes seconds.
# buildah runs with the vfs storage driver and chroot isolation, so it needs neither overlayfs nor
# user namespaces. Publish with `buildah push` (see docs/install.md#images).
#
# Environment:
#   SLUICE_IMAGE_PREFIX   repository prefix (default ghcr.io/sluice-dev)
#   SLUICE_IMAGE_TAG      tag (default: the version in pyproject.toml)
#   SLUICE_IMAGE_CACHE    where the base tarballs are kept (default ~/.cache/sluice/images)
#   SLUICE_DEBIAN_MIRROR  Debian mirror for mmdebstrap (default http://deb.debian.org/debian)
#   SLUICE_BUILD_CA       CA bundle for pip in the build stage when the build network intercepts
#                         TLS (default: $PIP_CERT, else $SSL_CERT_FILE, else the system bundle
#                         /etc/ssl/certs/ca-certificates.crt, where present). Passed as a
#                         build secret: mounted for the pip step only, never in a layer.
#   SLUICE_NATIVE_WHEEL_DIR  a directory holding the sluice_native wheel of this tree, built
#                         already (hack/test.sh passes the one it just built): used instead of
#                         building it again. Unset (the default), the wheel is built.
# Usage: hack/build-images.sh [--refresh-bases] [sidecar|operator ...]   (default: both)
# Prints the built image references, one per line, on stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '%s\n' "$*" >&2; }

refresh=0
images=()
for arg in "$@"; do
    case "${arg}" in
        --refresh-bases) refresh=1 ;;
        sidecar | operator) images+=("${arg}") ;;
        *) log "usage: $0 [--refresh-bases] [sidecar|operator ...]"; exit 2 ;;
    esac
done
[[ ${#images[@]} -gt 0 ]] || images=(sidecar operator)

if ! command -v mmdebstrap >/dev/null 2>&1 || ! command -v buildah >/dev/null 2>&1; then
    log "installing mmdebstrap and buildah (Debian packages)"
    apt-get update -qq && apt-get install -y -qq mmdebstrap buildah >&2
fi

export BUILDAH_ISOLATION=chroot
bh() { buildah --storage-driver vfs "$@"; }

SUITE=bookworm
MIRROR="${SLUICE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${SLUICE_IMAGE_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/sluice/images}"
PREFIX="${SLUICE_IMAGE_PREFIX:-ghcr.io/sluice-dev}"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)"
TAG="${SLUICE_IMAGE_TAG:-${VERSION}}"
REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ ${REVISION} != unknown ]] && ! git diff --quiet HEAD -- pyproject.toml README.md \
    operator/sluice_operator sidecar/sluice_sidecar sidecar/build_mypyc.py cli/sluice_cli native \
    2>/dev/null; then
    REVISION="${REVISION}-dirty"
fi
SOURCE="${SLUICE_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || echo https://github.com/sluice-dev/sluice)}"

# Files mmdebstrap leaves out of both bases (dpkg's path-exclude).
EXCLUDES=('/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*'
    '/usr/share/lintian/*' '/usr/share/linda/*')

# ---- the bases ---------------------------------------------------------------------------------

# The build stage: Debian's python3 with venv (ensurepip's pip and setuptools wheels), the
# Essential set (a shell, find), and gcc with Python's headers for the modules the sidecar
# compiles with mypyc. Never shipped.
make_build_base() { # $1: output tarball
    local opts=()
    for x in "${EXCLUDES[@]}"; do opts+=("--dpkgopt=path-exclude=${x}"); done
    mmdebstrap --quiet --variant=apt --include=python3,python3-venv,gcc,libpython3.11-dev \
        "${opts[@]}" "${SUITE}" "$1" "${MIRROR}"
}

# Runs as mmdebstrap's extract hook for the runtime base (the extract variant runs no customize
# hook), with $1 the new root.
runtime_hook() {
    local root="$1" tmp
    set -euo pipefail
    # Debian's CA bundle (the Mozilla set in the ca-certificates package, concatenated as
    # update-ca-certificates does), without the package's openssl/debconf/perl dependencies.
    # Never the build machine's own bundle.
    tmp="$(mktemp -d)"
    chown _apt "${tmp}" 2>/dev/null || true # apt downloads as _apt
    (cd "${tmp}" && APT_CONFIG="${MMDEBSTRAP_APT_CONFIG}" apt-get download -qq ca-certificates)
    dpkg-deb -x "${tmp}"/ca-certificates_*.deb "${tmp}/x"
    mkdir -p "${root}/etc/ssl/certs"
    for crt in "${tmp}"/x/usr/share/ca-certificates/mozilla/*.crt; do
        sed -e '$a\' "${crt}"
    done > "${root}/etc/ssl/certs/ca-certificates.crt"
    rm -rf "${tmp}"
    # /usr/bin/python3 (python3-minimal's link): the build stage's venv points at it.
    ln -sf python3.11 "${root}/usr/bin/python3"
    # Where OpenSSL (OPENSSLDIR /usr/lib/ssl) and so Python's default context look for CAs; the
    # openssl package, left out, would make these links.
    mkdir -p "${root}/usr/lib/ssl"
    ln -sfn /etc/ssl/certs "${root}/usr/lib/ssl/certs"
    ln -sf /etc/ssl/certs/ca-certificates.crt "${root}/usr/lib/ssl/cert.pem"
    # The non-root user the injected securityContext runs as (NONROOT_UID), as distroless names it.
    mkdir -p "${root}/home/nonroot" "${root}/tmp"
    chown 65532:65532 "${root}/home/nonroot"
    chmod 1777 "${root}/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
        > "${root}/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' > "${root}/etc/group"
    # Nothing runs these at run time: dpkg and its tools, tar, charset converters (Python has its
    # own codecs), docs, the standard library's IDE, 2to3, turtle, ensurepip/venv and pydoc topics.
    rm -rf "${root}"/usr/bin/dpkg* "${root}"/usr/bin/update-alternatives "${root}"/bin/tar \
        "${root}"/sbin "${root}"/usr/sbin "${root}"/etc/dpkg "${root}"/etc/alternatives \
        "${root}"/usr/share/{doc,man,info,locale,lintian,bug,dpkg,polkit-1,binfmts} \
        "${root}"/usr/lib/binfmt.d "${root}"/usr/lib/x86_64-linux-gnu/gconv \
        "${root}"/usr/lib/python3.11/{idlelib,lib2to3,pydoc_data,tkinter,turtledemo,turtle.py} \
        "${root}"/usr/lib/python3.11/{ensurepip,venv,test} \
        "${root}"/var/cache/* "${root}"/var/log/* "${root}"/var/lib/dpkg
    # Bytecode for the standard library (Debian compiles it in postinst, which extract skips): a
    # read-only root filesystem cannot write it at run time.
    chroot "${root}" /usr/bin/python3.11 -m compileall -q /usr/lib/python3.11
}

# The final stage: the packages extracted, not installed (no maintainer scripts, no dpkg database,
# no Essential set: no shell), then trimmed by runtime_hook.
make_runtime_base() { # $1: output tarball
    local opts=()
    for x in "${EXCLUDES[@]}"; do opts+=("--dpkgopt=path-exclude=${x}"); done
    local hook rc=0
    hook="$(mktemp --suffix=.sh)"
    { echo '#!/usr/bin/env bash'; declare -f runtime_hook; echo 'runtime_hook "$1"'; } > "${hook}"
    chmod +x "${hook}"
    mmdebstrap --quiet --variant=extract --include=python3.11-minimal,libpython3.11-stdlib \
        "${opts[@]}" --extract-hook="${hook}" "${SUITE}" "$1" "${MIRROR}" || rc=$?
    rm -f "${hook}"
    return "${rc}"
}

# The cache keys: everything that decides each base's contents.
base_key() { { echo "${SUITE} ${MIRROR} ${EXCLUDES[*]}"; declare -f "$@"; } | sha256sum | cut -c1-16; }
BUILD_KEY="$(base_key make_build_base)"
RUNTIME_KEY="$(base_key runtime_hook make_runtime_base)"
BUILD_BASE="localhost/sluice-base-build:${BUILD_KEY}"
RUNTIME_BASE="localhost/sluice-base-runtime:${RUNTIME_KEY}"

have_image() { bh inspect --type image "$1" >/dev/null 2>&1; }

commit_base() { # $1: tarball, $2: image, $3: title, $4: key
    local ctr mnt
    ctr="$(bh from scratch)"
    mnt="$(bh mount "${ctr}")"
    tar -C "${mnt}" --numeric-owner -xpf "$1"
    bh umount "${ctr}" >/dev/null
    bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --label "org.opencontainers.image.title=$3" \
        --label "dev.sluice.base-key=$4" --label "dev.sluice.debian-suite=${SUITE}" "${ctr}"
    bh commit --quiet --rm "${ctr}" "$2" >/dev/null
}

ensure_base() { # $1: make function, $2: image, $3: title, $4: key
    local tarball="${CACHE}/$3-$4.tar"
    if [[ ${refresh} == 1 ]]; then
        rm -f "${tarball}"
        bh rmi "$2" >/dev/null 2>&1 || true
    fi
    have_image "$2" && return 0
    if [[ ! -s ${tarball} ]]; then
        log "building $3 from Debian ${SUITE} packages (mmdebstrap)"
        mkdir -p "${CACHE}"
        "$1" "${tarball%.tar}.part.tar" >&2
        mv "${tarball%.tar}.part.tar" "${tarball}"
        # Older tarballs of this base are stale once the recipe changed.
        find "${CACHE}" -maxdepth 1 -name "$3-*.tar" ! -name "$3-$4.tar" -delete
    fi
    log "committing $2"
    commit_base "${tarball}" "$2" "$3" "$4"
    # Bases of older recipes.
    bh images --format '{{.Name}}:{{.Tag}}' "localhost/$3" 2>/dev/null | grep -vxF "$2" \
        | xargs -r buildah --storage-driver vfs rmi -f >/dev/null 2>&1 || true
}

ensure_base make_build_base "${BUILD_BASE}" sluice-base-build "${BUILD_KEY}"
ensure_base make_runtime_base "${RUNTIME_BASE}" sluice-base-runtime "${RUNTIME_KEY}"

# ---- the images --------------------------------------------------------------------------------

secret=()
ca="${SLUICE_BUILD_CA:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
if [[ -n ${ca} && -f ${ca} ]]; then
    secret=(--secret "id=build_ca,src=${ca}")
fi

# What decides an image: skipped when the image under its reference was built from exactly these
# (buildah's layer cache would also rebuild nothing, but with vfs each cached step still copies the
# stage's files).
sources_hash() {
    find pyproject.toml README.md operator/sluice_operator sidecar/sluice_sidecar cli/sluice_cli \
        -name __pycache__ -prune -o -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum | sha256sum | cut -c1-16
}
SOURCES="$(sources_hash)"

# The native scanner's wheel for the sidecar image (hack/native-wheel.sh: built, or taken from
# SLUICE_NATIVE_WHEEL_DIR), in build/native-wheel/, the one place .dockerignore admits it from.
# Its file is an input of the sidecar image: the script keeps the file when a rebuild has the same
# contents, so an unchanged crate leaves the image current.
NATIVE=""
if [[ " ${images[*]} " == *" sidecar "* ]]; then
    if [[ -n ${SLUICE_NATIVE_WHEEL_DIR:-} ]]; then
        wheel="$(bash hack/native-wheel.sh --from "${SLUICE_NATIVE_WHEEL_DIR}")"
    else
        wheel="$(bash hack/native-wheel.sh)"
    fi
    NATIVE="$(basename "${wheel}") $(sha256sum < "${wheel}" | cut -c1-16)"
fi
buildlog="$(mktemp -d)"
trap 'rm -rf "${buildlog}"' EXIT
nbuilt=0

for image in "${images[@]}"; do
    ref="${PREFIX}/sluice-${image}:${TAG}"
    inputs="$(
        printf '%s\n' "${BUILD_KEY}" "${RUNTIME_KEY}" "${SOURCES}" "${VERSION}" "${REVISION}" "${SOURCE}"
        cat "${image}/Dockerfile" .dockerignore
        if [[ ${image} == sidecar ]]; then echo "${NATIVE}"; fi
    )"
    inputs="$(sha256sum <<<"${inputs}" | cut -c1-16)"
    built="$(bh inspect --type image --format '{{index .ImageAnnotations "dev.sluice.inputs"}}' \
        "${ref}" 2>/dev/null || true)"
    if [[ ${built} == "${inputs}" ]]; then
        log "${ref} is current (inputs ${inputs})"
        echo "${ref}"
        continue
    fi
    log "building ${ref}"
    bh bud --layers --isolation chroot --network host \
        --build-arg "PYTHON_IMAGE=${BUILD_BASE}" --build-arg "RUNTIME_IMAGE=${RUNTIME_BASE}" \
        --build-arg "VERSION=${VERSION}" --build-arg "REVISION=${REVISION}" \
        --build-arg "SOURCE=${SOURCE}" "${secret[@]}" \
        -f "${image}/Dockerfile" -t "${ref}" . > "${buildlog}/${image}.log" 2>&1 \
        || { cat "${buildlog}/${image}.log" >&2; exit 1; }
    nbuilt=$((nbuilt + 1))
    # buildah 1.28's layer cache keys a LABEL step on its text, not on the build args in it, so a
    # cached final stage keeps the labels of the build that made it: set them again here (and the
    # inputs annotation, which a cached build drops too).
    ctr="$(bh from --pull=false "${ref}")"
    bh config --label "org.opencontainers.image.version=${VERSION}" \
        --label "org.opencontainers.image.revision=${REVISION}" \
        --label "org.opencontainers.image.source=${SOURCE}" \
        --annotation "dev.sluice.inputs=${inputs}" "${ctr}"
    bh commit --quiet --rm "${ctr}" "${ref}" >/dev/null
    echo "${ref}"
done

# With vfs every cached step is a full copy of its stage's files, so images from earlier builds
# add up fast: keep the bases, the tagged images and the steps of this build (its layer cache for
# the next), and remove the other untagged images built on a Sluice base. Only after building both
# images, whose logs name every step to keep.
if [[ ${nbuilt} == 2 ]]; then
    keep="$(grep -ohE -- '^--> (Using cache )?[0-9a-f]{11,64}' "${buildlog}"/*.log \
        | grep -oE '[0-9a-f]{11,64}$' | cut -c1-11 | sort -u)"
    stale=()
    while read -r id name; do
        [[ ${name} == "<none>:<none>" ]] || continue
        grep -qx "${id:0:11}" <<<"${keep}" || stale+=("${id}")
    done < <(bh images -a --filter label=dev.sluice.base-key --format '{{.ID}} {{.Name}}:{{.Tag}}')
    if [[ ${#stale[@]} -gt 0 ]]; then
        log "removing ${#stale[@]} image(s) of earlier builds"
        bh rmi -f "${stale[@]}" >/dev/null 2>&1 || true
    fi
fi
