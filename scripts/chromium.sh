#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests when it is missing. The
# tests drive it through Playwright with its executable path; Playwright never
# downloads a browser of its own.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "services: $(chromium --version 2>/dev/null | head -n 1) is installed"
  exit 0
fi
echo "services: installing Debian's chromium for the browser tests"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends chromium; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends chromium
fi
command -v chromium >/dev/null
