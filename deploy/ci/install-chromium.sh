#!/usr/bin/env bash
# Install Debian's chromium if it is missing: tests/e2e/test_docs_offline.py renders /docs and /redoc in it,
# headless with the network cut off (without chromium that test fails when CI is set). Idempotent, quiet.
set -euo pipefail
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v chromium >/dev/null 2>&1; then
  echo "chromium: installing chromium from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# Debian's launcher script warns on stderr about its own memory check; only the version line matters
echo "chromium: $(chromium --version 2>/dev/null)"
