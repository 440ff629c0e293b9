#!/usr/bin/env bash
# Build the ammp-edge appliance images. Run `./build.sh --help`.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
: "${AE_IMG_OUT:=$ROOT/.build}"
: "${AE_IMG_NAME:=ammp-edge}"
: "${AE_IMG_TAG:=$VERSION}"
: "${AE_IMG_BASE:=debian:bookworm-slim}"
: "${AE_IMG_SUITE:=bookworm}"
: "${AE_IMG_MIRROR:=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}"
: "${AE_IMG_MIRROR:=http://deb.debian.org/debian}"
: "${AE_IMG_BASE_FROM:=auto}"
: "${AE_IMG_DOCKERD:=auto}"
: "${AE_IMG_DOCKER_DATA_ROOT:=/var/lib/docker}"
: "${AE_IMG_CA_BUNDLE:=/etc/ssl/certs/ca-certificates.crt}"
: "${AE_IMG_PYTHON:=$ROOT/.venv/bin/python}"
: "${AE_IMG_TIMEOUT:=1800}"

. "$ROOT/image/rpi/build.sh"

usage() {
  cat <<USAGE
Usage: ./build.sh [OPTIONS] TARGET

Targets:
  docker   the Docker image $AE_IMG_NAME:$AE_IMG_TAG (also tagged $AE_IMG_NAME:latest), from the
           Dockerfile with the legacy builder (DOCKER_BUILDKIT=0; no buildx needed):
           1. starts dockerd when no daemon answers (AE_IMG_DOCKERD);
           2. makes sure the pinned base image $AE_IMG_BASE exists: when it is not local and cannot be
              pulled (no registry reachable), builds it from Debian packages with
              \`mmdebstrap --variant=minbase $AE_IMG_SUITE\` and \`docker import\`s it under that name,
              so the Dockerfile keeps its ordinary FROM line (AE_IMG_BASE_FROM);
           3. puts wheels of the app and its pinned dependencies in $AE_IMG_OUT/wheels with the host's
              pip (which trusts the host CA bundle, AE_IMG_CA_BUNDLE); the image installs from them with
              --no-index, so nothing inside the build needs the network except apt (plain http);
           4. docker build.
  rpi      the Raspberry Pi SD-card image (arm64; Pi 3, 4, Zero 2 W; not the Pi 5, whose kernel is not
           in Debian) in \$AE_IMG_OUT/rpi/: an arm64 root filesystem from Debian packages
           (mmdebstrap with qemu-user-static; image/rpi/packages, raspi-firmware + linux-image-arm64,
           initramfs with image/rpi/initramfs-modules only), the app in /opt/ammp-edge/venv from
           aarch64 wheels, the overlays image/rootfs/ and image/rpi/rootfs/ (systemd starts
           \`ammp-edge up\`; read-only root, /data grown on first boot, settings file
           image/rpi/boot/ammp-edge.txt on the boot partition), assembled by genimage without loop
           mounts (image/rpi/genimage.cfg.in) into NAME.img.xz with NAME.img.xz.sha256; also
           ammp-edge-app-TAG-aarch64.tar(.sha256), the app bundle the image_update command installs
           (serve it at the device's UPDATE_URL). About 7 min.

  dockerd  only step 1 of docker: start dockerd when no daemon answers; prints the pid file when it
           started one (stop it with kill), nothing when a daemon was already there.

Options:
  -h, --help        this text
  --no-base         never build the base image (same as AE_IMG_BASE_FROM=local)
  --rebuild-base    always rebuild the base image with mmdebstrap (AE_IMG_BASE_FROM=mmdebstrap)

Variables (environment; current value in brackets):
  AE_IMG_OUT               work and output directory [$AE_IMG_OUT]
  AE_IMG_NAME              image repository name [$AE_IMG_NAME]
  AE_IMG_TAG               image tag; the version in pyproject.toml [$AE_IMG_TAG]
  AE_IMG_BASE              pinned base image, the Dockerfile's ARG BASE [$AE_IMG_BASE]
  AE_IMG_SUITE             Debian suite of the base built with mmdebstrap [$AE_IMG_SUITE]
  AE_IMG_MIRROR            Debian mirror for mmdebstrap (from /etc/apt/sources.list.d/debian.sources)
                           [$AE_IMG_MIRROR]
  AE_IMG_BASE_FROM         auto: local image, else docker pull, else mmdebstrap; local: fail when not
                           local; pull; mmdebstrap: always rebuild [$AE_IMG_BASE_FROM]
  AE_IMG_DOCKERD           auto: start /usr/sbin/dockerd in the background when no daemon answers
                           (its pid in \$AE_IMG_OUT/dockerd.pid, log in dockerd.log; it keeps
                           running); never: fail instead [$AE_IMG_DOCKERD]
  AE_IMG_DOCKER_DATA_ROOT  --data-root of a dockerd started here [$AE_IMG_DOCKER_DATA_ROOT]
  AE_IMG_CA_BUNDLE         CA bundle the host's pip uses (PIP_CERT) [$AE_IMG_CA_BUNDLE]
  AE_IMG_PYTHON            the Python that builds the wheels; must be CPython 3.11 like the image's
                           [$AE_IMG_PYTHON]
  AE_IMG_TIMEOUT           seconds allowed for each long step [$AE_IMG_TIMEOUT]
  AE_IMG_RPI_NAME          rpi: image file name without .img.xz [$AE_IMG_RPI_NAME]
  AE_IMG_RPI_HOSTNAME      rpi: hostname [$AE_IMG_RPI_HOSTNAME]
  AE_IMG_RPI_FIRM_SIZE     rpi: boot (firmware, vfat) partition size [$AE_IMG_RPI_FIRM_SIZE]
  AE_IMG_RPI_ROOT_SIZE     rpi: root (ext4) partition size [$AE_IMG_RPI_ROOT_SIZE]
  AE_IMG_RPI_DATA_SIZE     rpi: data (ext4, /data) partition size in the image; grown to fill the card on
                           first boot [$AE_IMG_RPI_DATA_SIZE]
  AE_IMG_RPI_XZ            rpi: xz options [$AE_IMG_RPI_XZ]

Needs (Debian packages): docker: docker.io, mmdebstrap (only to make the base image); rpi: mmdebstrap
qemu-user-static binfmt-support arch-test genimage dosfstools mtools e2fsprogs xz-utils.
scripts/setup makes .venv.
Run as root.
USAGE
}

log() { printf 'build.sh: [%4d s] %s\n' "$SECONDS" "$*" >&2; }
die() { log "error: $*"; exit 1; }

start_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  [ "$AE_IMG_DOCKERD" = auto ] || die "no Docker daemon answers (AE_IMG_DOCKERD=$AE_IMG_DOCKERD)"
  command -v dockerd >/dev/null || PATH=$PATH:/usr/sbin
  command -v dockerd >/dev/null || die "dockerd not found: apt-get install docker.io"
  mkdir -p "$AE_IMG_OUT"
  log "starting dockerd (data root $AE_IMG_DOCKER_DATA_ROOT, log $AE_IMG_OUT/dockerd.log)"
  nohup dockerd --data-root "$AE_IMG_DOCKER_DATA_ROOT" >"$AE_IMG_OUT/dockerd.log" 2>&1 &
  echo $! >"$AE_IMG_OUT/dockerd.pid"
  DOCKERD_STARTED=1
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  die "dockerd did not answer within 60 s (see $AE_IMG_OUT/dockerd.log)"
}

mmdebstrap_base() {
  command -v mmdebstrap >/dev/null || die "mmdebstrap not found: apt-get install mmdebstrap"
  log "building $AE_IMG_BASE from Debian $AE_IMG_SUITE ($AE_IMG_MIRROR) with mmdebstrap"
  timeout "$AE_IMG_TIMEOUT" mmdebstrap --quiet --variant=minbase \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -f "$1"/var/cache/apt/*.bin; rm -rf "$1"/var/lib/apt/lists/*' \
    "$AE_IMG_SUITE" - "$AE_IMG_MIRROR" \
    | docker import -c 'CMD ["bash"]' -m "mmdebstrap --variant=minbase $AE_IMG_SUITE" - "$AE_IMG_BASE" >/dev/null
}

ensure_base() {
  case "$AE_IMG_BASE_FROM" in
    mmdebstrap) mmdebstrap_base; return ;;
    local|auto|pull) ;;
    *) die "AE_IMG_BASE_FROM=$AE_IMG_BASE_FROM: expected auto, local, pull or mmdebstrap" ;;
  esac
  if docker image inspect "$AE_IMG_BASE" >/dev/null 2>&1; then log "base image $AE_IMG_BASE is local"; return; fi
  [ "$AE_IMG_BASE_FROM" = local ] && die "base image $AE_IMG_BASE is not local (AE_IMG_BASE_FROM=local)"
  if timeout 120 docker pull -q "$AE_IMG_BASE" >/dev/null 2>&1; then log "pulled $AE_IMG_BASE"; return; fi
  [ "$AE_IMG_BASE_FROM" = pull ] && die "cannot pull $AE_IMG_BASE"
  log "cannot pull $AE_IMG_BASE (no registry reachable)"
  mmdebstrap_base
}

wheels() {
  [ -x "$AE_IMG_PYTHON" ] || die "$AE_IMG_PYTHON not found: run scripts/setup first (or set AE_IMG_PYTHON)"
  local ver
  ver=$("$AE_IMG_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$ver" = 3.11 ] || die "$AE_IMG_PYTHON is Python $ver; the image's Debian $AE_IMG_SUITE has 3.11"
  rm -rf "$AE_IMG_OUT/wheels"; mkdir -p "$AE_IMG_OUT/wheels"
  log "wheels of the app and its dependencies -> $AE_IMG_OUT/wheels"
  [ -r "$AE_IMG_CA_BUNDLE" ] && export PIP_CERT="$AE_IMG_CA_BUNDLE"
  timeout "$AE_IMG_TIMEOUT" "$AE_IMG_PYTHON" -m pip wheel -q --disable-pip-version-check \
    --wheel-dir "$AE_IMG_OUT/wheels" "$ROOT" >&2
}

build_docker() {
  local t0=$SECONDS context_out
  start_dockerd
  ensure_base
  wheels
  # the Dockerfile copies .build/wheels/; with another AE_IMG_OUT, stage them there
  context_out="$ROOT/.build/wheels"
  if [ "$(readlink -f "$AE_IMG_OUT/wheels")" != "$(readlink -f "$context_out")" ]; then
    rm -rf "$context_out"; mkdir -p "$context_out"; cp "$AE_IMG_OUT"/wheels/*.whl "$context_out/"
  fi
  log "docker build $AE_IMG_NAME:$AE_IMG_TAG (legacy builder)"
  DOCKER_BUILDKIT=0 timeout "$AE_IMG_TIMEOUT" docker build -q --build-arg "BASE=$AE_IMG_BASE" \
    -t "$AE_IMG_NAME:$AE_IMG_TAG" -t "$AE_IMG_NAME:latest" "$ROOT" >&2
  log "built $AE_IMG_NAME:$AE_IMG_TAG in $((SECONDS - t0)) s, $(docker image inspect -f '{{.Size}}' "$AE_IMG_NAME:$AE_IMG_TAG" | awk '{printf "%.0f MB", $1/1e6}')"
  echo "$AE_IMG_NAME:$AE_IMG_TAG"
}

target=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --no-base) AE_IMG_BASE_FROM=local ;;
    --rebuild-base) AE_IMG_BASE_FROM=mmdebstrap ;;
    docker|rpi|dockerd) [ -z "$target" ] || die "one target at a time"; target=$1 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
case "$target" in
  docker) build_docker ;;
  rpi) build_rpi ;;
  dockerd) DOCKERD_STARTED=0; start_dockerd; [ "$DOCKERD_STARTED" = 0 ] || echo "$AE_IMG_OUT/dockerd.pid" ;;
  *) usage >&2; exit 2 ;;
esac
