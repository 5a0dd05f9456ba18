#!/usr/bin/env bash
# Base images for hosts where no image registry answers (an offline or air-gapped host).
#
#   eval "$(bash deploy/local-images.sh)"       # then: docker compose up
#   bash deploy/local-images.sh --with-python   # also the image of compose-smoke.sh's webhook receiver
#   bash deploy/local-images.sh --rebuild       # rebuild the local ones (newer Debian packages)
#   bash deploy/local-images.sh --local         # build local ones even where a registry answers
#
# For each base image the compose setup uses — RUST_IMAGE and DEBIAN_IMAGE (Dockerfile),
# RABBITMQ_IMAGE and REDIS_IMAGE (docker-compose.yml) — in this order:
#   1. the official image is here already, or `docker pull` gets it: used as it is, and
#      nothing is printed (the compose file's default names it);
#   2. otherwise a stand-in is built from Debian's packages, tagged fwdwatch-local/…,
#      and `export NAME=fwdwatch-local/…` is printed for it.
# Progress goes to stderr, the export lines to stdout. A local image is rebuilt only
# when its recipe (the files under deploy/images/, the base it is built on, the Rust
# toolchain) changes, or with --rebuild.
#
# How each stand-in is made (deploy/images/):
#   debian    debootstrap --variant=minbase from the host's Debian mirror, slimmed,
#             `docker import` (debian-rootfs), then the host's own certificate authorities
#             (/usr/local/share/ca-certificates: a TLS-inspecting proxy's, say) on top
#   rust      the debian image + gcc/cmake/perl + the host's own Rust toolchain (rustc --print sysroot)
#   rabbitmq  the debian image + Debian's rabbitmq-server (3.10, management/prometheus/shovel)
#   redis     the debian image + Debian's redis-server (7.0)
#   python    the debian image + Debian's python3 (only with --with-python)
# Needs root (debootstrap), a running Docker engine, and for the rust image a Rust
# toolchain on the host.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
WORK=target/local-images
IMAGES=deploy/images
LABEL=org.fwdwatch.local-image.recipe

# Official image ↔ local stand-in. The official names are the defaults in the
# Dockerfile and docker-compose.yml (deploy/validate.py checks that they agree).
OFFICIAL_DEBIAN=debian:bookworm-slim
OFFICIAL_RUST=rust:1.95-bookworm
OFFICIAL_RABBITMQ=rabbitmq:3.13-management
OFFICIAL_REDIS=redis:7-alpine
OFFICIAL_PYTHON=python:3.12-slim
LOCAL_ROOTFS=fwdwatch-local/debian-rootfs:${SUITE}
LOCAL_DEBIAN=fwdwatch-local/debian:${SUITE}-slim
LOCAL_RABBITMQ=fwdwatch-local/rabbitmq:3.10-management
LOCAL_REDIS=fwdwatch-local/redis:7.0
LOCAL_PYTHON=fwdwatch-local/python:3.11

with_python=false rebuild=false force_local=false
for arg in "$@"; do
    case $arg in
        --with-python) with_python=true ;;
        --rebuild) rebuild=true ;;
        --local) force_local=true ;;
        *)
            echo "usage: local-images.sh [--with-python] [--rebuild] [--local]" >&2
            exit 2
            ;;
    esac
done

log() { printf 'local-images: %s\n' "$*" >&2; }
fail() {
    log "$*"
    exit 1
}

mkdir -p "$WORK"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (start dockerd first)"

# True when the official IMAGE can be used: present, or pulled now.
official_available() {
    local image=$1
    $force_local && return 1
    docker image inspect "$image" >/dev/null 2>&1 && return 0
    log "pulling ${image}"
    if docker pull -q "$image" >"${WORK}/pull.log" 2>&1; then
        return 0
    fi
    log "cannot pull ${image}: $(tail -n 1 "${WORK}/pull.log")"
    return 1
}

recipe_of() { docker image inspect -f "{{ index .Config.Labels \"${LABEL}\" }}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect -f '{{.Id}}' "$1"; }
hash_of() { sha256sum | cut -c1-32; }

# Builds TAG from deploy/images/NAME (or from CONTEXT) on top of BASE (the build
# argument BASE_ARG, default BASE_IMAGE), unless an image with the same recipe exists.
# Extra recipe inputs come on stdin.
build_local() {
    local name=$1 tag=$2 base=$3 context=${4:-${IMAGES}/$1} base_arg=${5:-BASE_IMAGE} recipe
    recipe=$({
        cat
        image_id "$base"
        find "${IMAGES}/${name}" -type f -print0 | sort -z | xargs -0 sha256sum
    } | hash_of)
    if ! $rebuild && [[ $(recipe_of "$tag") == "$recipe" ]]; then
        log "${tag}: up to date"
        return 0
    fi
    log "${tag}: building (log: ${WORK}/${name}.log)"
    if ! docker build --pull=false --build-arg "${base_arg}=${base}" --label "${LABEL}=${recipe}" \
        -t "$tag" "$context" >"${WORK}/${name}.log" 2>&1; then
        tail -n 30 "${WORK}/${name}.log" >&2
        fail "${tag}: build failed"
    fi
}

debian_base() {
    local mirror recipe
    # The mirror this host's apt uses (deb822 or one-line format), else Debian's own.
    mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    if [[ -z $mirror ]]; then
        mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(http[^[:space:]]*\).*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n 1)
    fi
    mirror=${DEBIAN_MIRROR:-${mirror:-http://deb.debian.org/debian}}
    recipe=$({
        echo "$SUITE $mirror"
        cat "${IMAGES}/debian/mkrootfs.sh"
    } | hash_of)
    if ! $rebuild && [[ $(recipe_of "$LOCAL_ROOTFS") == "$recipe" ]]; then
        log "${LOCAL_ROOTFS}: up to date"
    else
        [[ $(id -u) == 0 ]] || fail "${LOCAL_ROOTFS}: debootstrap needs root"
        if ! command -v debootstrap >/dev/null; then
            log "installing debootstrap"
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
        fi
        log "${LOCAL_ROOTFS}: debootstrap ${SUITE} from ${mirror} (log: ${WORK}/debian-rootfs.log)"
        local rootfs=${WORK}/debian-rootfs
        if ! bash "${IMAGES}/debian/mkrootfs.sh" "$SUITE" "$mirror" "$rootfs" >"${WORK}/debian-rootfs.log" 2>&1; then
            tail -n 30 "${WORK}/debian-rootfs.log" >&2
            fail "${LOCAL_ROOTFS}: debootstrap failed"
        fi
        tar --numeric-owner -C "$rootfs" -c . |
            docker import \
                --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
                --change 'CMD ["bash"]' \
                --change "LABEL ${LABEL}=${recipe}" \
                - "$LOCAL_ROOTFS" >/dev/null
        rm -rf "$rootfs"
        log "${LOCAL_ROOTFS}: imported"
    fi
    # The slim image proper: the root filesystem + this host's certificate authorities.
    local context=${WORK}/debian-context
    rm -rf "$context"
    mkdir -p "${context}/ca-certificates"
    cp "${IMAGES}/debian/Dockerfile" "$context/"
    find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -type f \
        -exec cp {} "${context}/ca-certificates/" \; 2>/dev/null || true
    (cd "$context" && find ca-certificates -type f -print0 | sort -z | xargs -0 -r sha256sum) |
        build_local debian "$LOCAL_DEBIAN" "$LOCAL_ROOTFS" "$context" ROOTFS_IMAGE
    rm -rf "$context"
}

rust_image() {
    command -v rustc >/dev/null || fail "no Rust toolchain on this host to put into the rust image"
    local sysroot version tag context
    sysroot=$(rustc --print sysroot)
    version=$(rustc --version | sed -n 's/^rustc \([0-9]*\.[0-9]*\).*/\1/p')
    tag=fwdwatch-local/rust:${version}-${SUITE}
    context=${WORK}/rust-context
    # The recipe: the toolchain's identity; the context is staged only when it changed.
    local recipe
    recipe=$({
        rustc -vV
        image_id "$LOCAL_DEBIAN"
        find "${IMAGES}/rust" -type f -print0 | sort -z | xargs -0 sha256sum
    } | hash_of)
    if ! $rebuild && [[ $(recipe_of "$tag") == "$recipe" ]]; then
        log "${tag}: up to date"
    else
        rm -rf "$context"
        mkdir -p "${context}/toolchain"
        cp "${IMAGES}/rust/Dockerfile" "$context/"
        # Hard links where possible (same file system): no copy of ~600 MB.
        local part
        for part in bin lib libexec; do
            [[ -d ${sysroot}/${part} ]] || continue
            cp -al "${sysroot}/${part}" "${context}/toolchain/" 2>/dev/null ||
                cp -a "${sysroot}/${part}" "${context}/toolchain/"
        done
        log "${tag}: building from ${sysroot} (log: ${WORK}/rust.log)"
        if ! docker build --pull=false --build-arg "BASE_IMAGE=${LOCAL_DEBIAN}" --label "${LABEL}=${recipe}" \
            -t "$tag" "$context" >"${WORK}/rust.log" 2>&1; then
            tail -n 30 "${WORK}/rust.log" >&2
            fail "${tag}: build failed"
        fi
        rm -rf "$context"
    fi
    echo "export RUST_IMAGE=${tag}"
}

need_debian=false
exports=()
official_available "$OFFICIAL_DEBIAN" || { need_debian=true; exports+=("export DEBIAN_IMAGE=${LOCAL_DEBIAN}"); }
rust_official=true rabbitmq_official=true redis_official=true python_official=true
official_available "$OFFICIAL_RUST" || { rust_official=false; need_debian=true; }
official_available "$OFFICIAL_RABBITMQ" || { rabbitmq_official=false; need_debian=true; }
official_available "$OFFICIAL_REDIS" || { redis_official=false; need_debian=true; }
if $with_python; then
    official_available "$OFFICIAL_PYTHON" || { python_official=false; need_debian=true; }
fi

if $need_debian; then
    debian_base
fi
if ! $rust_official; then
    rust_export=$(rust_image)
    exports+=("$rust_export")
fi
if ! $rabbitmq_official; then
    build_local rabbitmq "$LOCAL_RABBITMQ" "$LOCAL_DEBIAN" </dev/null
    exports+=("export RABBITMQ_IMAGE=${LOCAL_RABBITMQ}")
fi
if ! $redis_official; then
    build_local redis "$LOCAL_REDIS" "$LOCAL_DEBIAN" </dev/null
    exports+=("export REDIS_IMAGE=${LOCAL_REDIS}")
fi
if $with_python && ! $python_official; then
    build_local python "$LOCAL_PYTHON" "$LOCAL_DEBIAN" </dev/null
    exports+=("export PYTHON_IMAGE=${LOCAL_PYTHON}")
fi

if ((${#exports[@]})); then
    printf '%s\n' "${exports[@]}"
else
    log "every official image is available: nothing to build"
fi
