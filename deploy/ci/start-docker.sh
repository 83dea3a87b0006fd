#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install Debian's docker.io if dockerd is missing, start
# dockerd in the background if nothing answers (no systemd on CI machines), and wait for it (bounded).
# Fails if no engine answers in the end: CI must run the testcontainers path, not skip it.
set -euo pipefail
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if docker info >/dev/null 2>&1; then
  echo "docker: an engine answers already"
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker: installing docker.io from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
log="${TMPDIR:-/tmp}/vibewave-dockerd.log"
echo "docker: starting dockerd (log: $log)"
as_root sh -c "nohup dockerd >'$log' 2>&1 &"
for _ in $(seq 120); do
  if docker info >/dev/null 2>&1; then
    echo "docker: engine $(docker version --format '{{.Server.Version}}') answers"
    exit 0
  fi
  sleep 0.5
done
echo "docker: no engine answered within 60 s; last lines of $log:" >&2
tail -20 "$log" >&2 || true
exit 1
