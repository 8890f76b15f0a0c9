#!/usr/bin/env bash
# Real-window check (make gui-check): the QGIS desktop with the plugin loads the held-out sample image,
# the dock's Predict button runs, the result layers appear; a screenshot goes to build/gui-check.png and
# a one-line outcome to build/gui-check.txt. Without a display it starts a virtual one (xvfb-run).
# The model is $GUI_CHECK_MODEL when set, else demo-output/model.pt when `make demo` has written it,
# else build/gui-check-model/model.pt. A model file that does not exist yet is made by the train
# algorithm on sample scenes 1 and 2 with a small budget (6 short epochs: about 3 minutes on 2 busy
# CPU cores, validation IoU about 0.7) and kept for the next check.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$repo/build
sample=$repo/resources/sample
mkdir -p "$build/gui-check-output"
export QGIS_CUSTOM_CONFIG_PATH=${QGIS_CUSTOM_CONFIG_PATH:-$repo/.qgis-profile}
export GUI_CHECK_IMAGE=$sample/scene_3.tif  # training never saw scene 3
export GUI_CHECK_OUTPUT=$build/gui-check-output
export GUI_CHECK_SCREENSHOT=$build/gui-check.png
rm -f "$GUI_CHECK_SCREENSHOT" "$build/gui-check.txt"

if [ -n "${GUI_CHECK_MODEL:-}" ]; then
  :  # the caller's model (trained below if the file does not exist yet)
elif [ -f "$repo/demo-output/model.pt" ]; then
  GUI_CHECK_MODEL=$repo/demo-output/model.pt
else
  GUI_CHECK_MODEL=$build/gui-check-model/model.pt
fi
export GUI_CHECK_MODEL
if [ ! -f "$GUI_CHECK_MODEL" ]; then
  echo "Training the check's model on sample scenes 1 and 2 (about 3 minutes)..."
  # also enables the plugin in the profile, which the desktop reads too
  QT_QPA_PLATFORM=offscreen bash "$repo/scripts/qgis_process.sh" run unet_buildings:train -- \
    "IMAGES=$sample/scene_1.tif" "IMAGES=$sample/scene_2.tif" \
    "LABELS=$sample/scene_1_labels.tif" "LABELS=$sample/scene_2_labels.tif" BUILDING_VALUES=2 \
    EPOCHS=6 PATCHES_PER_EPOCH=40 BATCH_SIZE=8 BASE_WIDTH=16 SEED=7 \
    "OUTPUT_MODEL=$GUI_CHECK_MODEL" >"$build/gui-check-train.log" 2>&1 \
    || { echo "training the check's model failed: see $build/gui-check-train.log" >&2; exit 1; }
else
  # the desktop only loads the plugin once it is enabled in the profile (qgis_process.sh does that)
  QT_QPA_PLATFORM=offscreen bash "$repo/scripts/qgis_process.sh" --version >/dev/null
fi
echo "Model: $GUI_CHECK_MODEL"

desktop=(qgis --nologo --code "$repo/scripts/gui_check.py")
if [ "${QT_QPA_PLATFORM:-xcb}" = xcb ] && [ -z "${DISPLAY:-}" ]; then
  command -v xvfb-run >/dev/null || { echo "xvfb-run is missing: apt-get install xvfb xauth" >&2; exit 127; }
  desktop=(xvfb-run -a -s "-screen 0 1400x900x24" "${desktop[@]}")
fi
timeout 200 "${desktop[@]}" >"$build/gui-check-qgis.log" 2>&1 || true
[ -f "$build/gui-check.txt" ] || { echo "QGIS ended without a result: see $build/gui-check-qgis.log" >&2; exit 1; }
cat "$build/gui-check.txt"
grep -q '^ok:' "$build/gui-check.txt" && [ -s "$GUI_CHECK_SCREENSHOT" ]
echo "screenshot: $GUI_CHECK_SCREENSHOT"
