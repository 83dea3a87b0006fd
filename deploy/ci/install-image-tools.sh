#!/usr/bin/env bash
# Install Debian's debootstrap and docker-compose if they are missing: tests/e2e/test_compose.py builds the
# base image with debootstrap (deploy/image/build-base.sh; no registry is reachable from CI) and runs
# deploy/compose/compose.yaml with docker-compose (1.29, the compose Debian packages). Idempotent, quiet.
set -euo pipefail
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "image tools: installing ${missing[*]} from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "image tools: debootstrap $(dpkg-query -W -f='${Version}' debootstrap), $(docker-compose version --short 2>/dev/null | head -1 | sed 's/^/docker-compose /')"
