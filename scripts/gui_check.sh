#!/usr/bin/env bash
# Real-window check (make gui-check): the QGIS desktop with the plugin walks train -> predict -> evaluate
# through the dock's own buttons on the sample scenes (adapt the dock's model, the starter model, to scenes 1
# and 2 for GUI_CHECK_TRAIN_MINUTES, default 2; predict and evaluate the held-out scene 3). Screenshots after each step go to
# build/gui-check-1-train.png, -2-predict.png, -3-evaluate.png (the last also as build/gui-check.png), a
# one-line outcome to build/gui-check.txt. Without a display it starts a virtual one (xvfb-run).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$repo/build
rm -rf "$build/gui-check-output"
mkdir -p "$build/gui-check-output"
export QGIS_CUSTOM_CONFIG_PATH=${QGIS_CUSTOM_CONFIG_PATH:-$repo/.qgis-profile}
export GUI_CHECK_SAMPLE=$repo/resources/sample
export GUI_CHECK_OUTPUT=$build/gui-check-output
export GUI_CHECK_SCREENSHOT=$build/gui-check.png
export GUI_CHECK_TRAIN_MINUTES=${GUI_CHECK_TRAIN_MINUTES:-2}
rm -f "$build"/gui-check*.png "$build/gui-check.txt"

# the desktop only loads the plugin once it is enabled in the profile (qgis_process.sh does that)
QT_QPA_PLATFORM=offscreen bash "$repo/scripts/qgis_process.sh" --version >/dev/null
echo "Training in the dock for $GUI_CHECK_TRAIN_MINUTES minute(s), then predicting and evaluating..."

desktop=(qgis --nologo --code "$repo/scripts/gui_check.py")
if [ "${QT_QPA_PLATFORM:-xcb}" = xcb ] && [ -z "${DISPLAY:-}" ]; then
  command -v xvfb-run >/dev/null || { echo "xvfb-run is missing: apt-get install xvfb xauth" >&2; exit 127; }
  desktop=(xvfb-run -a -s "-screen 0 1400x900x24" "${desktop[@]}")
fi
timeout $((GUI_CHECK_TRAIN_MINUTES * 60 + 600)) "${desktop[@]}" >"$build/gui-check-qgis.log" 2>&1 || true
[ -f "$build/gui-check.txt" ] || { echo "QGIS ended without a result: see $build/gui-check-qgis.log" >&2; exit 1; }
cat "$build/gui-check.txt"
# (an `a && b` line would not stop the script under set -e when `a` fails: test explicitly)
if ! grep -q '^ok:' "$build/gui-check.txt" || [ ! -s "$GUI_CHECK_SCREENSHOT" ]; then
  echo "The GUI check failed: see $build/gui-check.txt and $build/gui-check-qgis.log" >&2
  exit 1
fi
echo "screenshots: $build/gui-check-1-train.png $build/gui-check-2-predict.png $build/gui-check-3-evaluate.png"
