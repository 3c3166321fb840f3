#!/usr/bin/env bash
# Render a `tailored report RUN --html` page in headless Chromium and save a PNG, to check that the
# self-contained page (inline base64 loss curves, tables, red flags) displays. Needs Debian's chromium:
#   apt-get update && apt-get install -y chromium
# Usage: bench/screenshot_report.sh RUN_FOLDER [OUT.png] [HEIGHT]
set -euo pipefail
run=${1:?usage: bench/screenshot_report.sh RUN_FOLDER [OUT.png] [HEIGHT]}
png=${2:-/tmp/tailored-report.png}
height=${3:-2400}
html=$(mktemp --suffix=.html)
profile=$(mktemp -d)
"$(dirname "$0")/../.venv/bin/tailored" report "$run" --html "$html" >/dev/null
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --window-size=1200,"$height" --screenshot="$png" "file://$html" 2>/dev/null
rm -rf "$profile"
echo "report $html → screenshot $png ($(stat -c %s "$png") bytes)"
