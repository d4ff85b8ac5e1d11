#!/usr/bin/env bash
# Render an evaluation report in headless Chromium and save a full-page screenshot.
#   scripts/screenshot_report.sh work/demo/gen/report.html report.png
# Needs Debian's chromium (apt-get install chromium). Images are inline data: URIs, so a page that
# renders here renders complete anywhere.
set -euo pipefail
report="$(realpath "$1")"
out="$(realpath -m "$2")"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,4000 \
  --virtual-time-budget=5000 --screenshot="$out" "file://$report" >/dev/null 2>&1
test -s "$out" && echo "screenshot → $out"
