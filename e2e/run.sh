#!/usr/bin/env bash
# Browser tests of the operator's console: builds `fwdwatch`, makes sure Debian's
# Chromium and playwright-core are there, runs console.test.mjs (which starts
# `fwdwatch up` with its bundled simulator on free ports, drives Chromium, and
# tears everything down). Exits non-zero on any failure.
#
#   bash e2e/run.sh                 # screenshots in e2e/out/
#   bash e2e/run.sh --update-docs   # screenshots in docs/ (for docs/console.md)
set -euo pipefail
cd "$(dirname "$0")/.."

shots="e2e/out"
if [[ "${1:-}" == "--update-docs" ]]; then
    shots="docs"
fi

if [[ ! -x /usr/bin/chromium ]]; then
    echo "==> installing Debian's chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

echo "==> building fwdwatch"
cargo build --locked -q -p fwdwatch-cli --bin fwdwatch
target_dir="$(cargo metadata --format-version 1 --no-deps | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')"

echo "==> playwright-core (npm ci)"
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)

echo "==> browser tests"
FWDWATCH_BIN="$target_dir/debug/fwdwatch" CHROMIUM=/usr/bin/chromium SCREENSHOT_DIR="$shots" \
    node e2e/console.test.mjs
