#!/usr/bin/env bash
# System tools the tests use: ffprobe (the primary probe backend; Debian's ffmpeg package) and
# Chromium (renders the HTML report headless). Installed from Debian's registry when we are root
# and apt-get exists; otherwise one line says what to install. Used by `make test` and .ci/run.
set -euo pipefail
missing=()
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "error: the tests need ${missing[*]} on PATH; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
  exit 2
fi
