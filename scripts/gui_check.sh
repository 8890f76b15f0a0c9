#!/usr/bin/env bash
# Real-window check (make gui-check): the QGIS desktop with the plugin loads the sample image, the
# dock's Predict button runs, the result layers appear; a screenshot goes to build/gui-check.png and
# a one-line outcome to build/gui-check.txt. Without a display it starts a virtual one (xvfb-run).
# The model is trained first by the train algorithm with a tiny budget (seconds), so the check needs
# nothing but the repository.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$repo/build
mkdir -p "$build/gui-check-output"
export QGIS_CUSTOM_CONFIG_PATH=${QGIS_CUSTOM_CONFIG_PATH:-$repo/.qgis-profile}
export GUI_CHECK_IMAGE=$repo/resources/sample/scene_1.tif
export GUI_CHECK_MODEL=$build/gui-check-output/sample_model.pt
export GUI_CHECK_OUTPUT=$build/gui-check-output
export GUI_CHECK_SCREENSHOT=$build/gui-check.png
rm -f "$GUI_CHECK_SCREENSHOT" "$build/gui-check.txt"

if [ ! -f "$GUI_CHECK_MODEL" ]; then
  # also enables the plugin in the profile, which the desktop reads too
  QT_QPA_PLATFORM=offscreen bash "$repo/scripts/qgis_process.sh" run unet_buildings:train -- \
    "IMAGES=$GUI_CHECK_IMAGE" "LABELS=$repo/resources/sample/scene_1_labels.tif" BUILDING_VALUES=2 \
    EPOCHS=1 PATCHES_PER_EPOCH=16 BATCH_SIZE=4 BASE_WIDTH=8 TILE_SIZE=128 SEED=1 \
    "OUTPUT_MODEL=$GUI_CHECK_MODEL" >"$build/gui-check-train.log" 2>&1 \
    || { echo "training the check's model failed: see $build/gui-check-train.log" >&2; exit 1; }
fi

desktop=(qgis --nologo --code "$repo/scripts/gui_check.py")
if [ "${QT_QPA_PLATFORM:-xcb}" = xcb ] && [ -z "${DISPLAY:-}" ]; then
  command -v xvfb-run >/dev/null || { echo "xvfb-run is missing: apt-get install xvfb xauth" >&2; exit 127; }
  desktop=(xvfb-run -a -s "-screen 0 1400x900x24" "${desktop[@]}")
fi
timeout 300 "${desktop[@]}" >"$build/gui-check-qgis.log" 2>&1 || true
[ -f "$build/gui-check.txt" ] || { echo "QGIS ended without a result: see $build/gui-check-qgis.log" >&2; exit 1; }
cat "$build/gui-check.txt"
grep -q '^ok:' "$build/gui-check.txt" && [ -s "$GUI_CHECK_SCREENSHOT" ]
echo "screenshot: $GUI_CHECK_SCREENSHOT"
