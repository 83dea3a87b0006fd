#!/usr/bin/env bash
# Build a local base image, Debian bookworm (minbase) with python3 and python3-venv, for machines that cannot
# pull from a registry: debootstrap a root filesystem and `docker import` it. Users who can pull build
# FROM the official python:3.11-slim instead (see deploy/image/README.md); this base stands in for it.
#
#   deploy/image/build-base.sh [TAG]     (default vibewave-base:bookworm; nothing is done if TAG exists)
#
# The Debian mirror is the one apt is configured with here (DEBIAN_MIRROR overrides it). debootstrap
# needs root: run as root, or this uses sudo.
set -euo pipefail
TAG="${1:-${VIBEWAVE_BASE_IMAGE:-vibewave-base:bookworm}}"
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates  # ca-certificates: the services call RunPod and webhooks over TLS
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image: $TAG exists"
  exit 0
fi

apt_mirror() {
  # deb822 sources (bookworm's default): the URIs of the stanza whose Suites name the plain suite
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -r "$file" ] || continue
    awk -v suite="$SUITE" '
      /^[[:space:]]*$/ { if (uri != "" && hit) { print uri; exit } uri = ""; hit = 0; next }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
      END { if (uri != "" && hit) print uri }
    ' "$file"
  done
  # one-line sources: deb [options] URI SUITE COMPONENTS
  if [ -r /etc/apt/sources.list ]; then
    sed -E 's/\[[^]]*\]//' /etc/apt/sources.list | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2 }'
  fi
}

MIRROR="${DEBIAN_MIRROR:-$(apt_mirror | head -1)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
DEBOOTSTRAP="$(command -v debootstrap || echo /usr/sbin/debootstrap)"
[ -x "$DEBOOTSTRAP" ] || { echo "base image: debootstrap is missing (deploy/ci/install-image-tools.sh installs it)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vibewave-base.XXXXXX")"
ROOTFS="$WORK/rootfs"
trap 'as_root rm -rf "$WORK"' EXIT
echo "base image: debootstrap $SUITE ($PACKAGES) from $MIRROR"
as_root "$DEBOOTSTRAP" --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
  tail -20 "$WORK/debootstrap.log" >&2
  exit 1
}
# The certificate authorities this machine adds to Debian's (a TLS-inspecting egress proxy's, say) are
# trusted in the base as on the host, so the image build reaches PyPI from here as the host does.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  as_root cp /usr/local/share/ca-certificates/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
  as_root chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
fi
# what an image needs no copy of: package caches and lists, documentation, locales but C
as_root rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/* \
  "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/*
as_root tar --numeric-owner -C "$ROOTFS" -c . |
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$TAG" >/dev/null
echo "base image: $TAG ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
