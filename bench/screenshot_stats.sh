#!/usr/bin/env bash
# Render a `tailored data stats --html` report in headless Chromium and save a PNG, to check that the
# self-contained page (inline base64 plots) displays. Needs Debian's chromium:
#   apt-get update && apt-get install -y chromium
# Usage: bench/screenshot_stats.sh DATA.jsonl [OUT.png]
set -euo pipefail
data=${1:?usage: bench/screenshot_stats.sh DATA.jsonl [OUT.png]}
png=${2:-/tmp/tailored-stats.png}
html=$(mktemp --suffix=.html)
profile=$(mktemp -d)
"$(dirname "$0")/../.venv/bin/tailored" data stats "$data" --model none --html "$html" >/dev/null
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update \
  --disable-sync --no-first-run --user-data-dir="$profile" --window-size=1200,1800 --screenshot="$png" "file://$html" 2>/dev/null
rm -rf "$profile"
echo "report $html → screenshot $png ($(stat -c %s "$png") bytes)"
