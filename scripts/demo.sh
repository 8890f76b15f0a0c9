#!/usr/bin/env bash
# The main job, headless through qgis_process, on the bundled sample: train a small U-Net on
# scenes 1 and 2, extract buildings from the held-out scene 3, score them against its labels.
# Run through `make demo`, which sets everything up first.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
sample=resources/sample
out=${DEMO_OUTPUT:-demo-output}
qgis_process=scripts/qgis_process.sh
mkdir -p "$out"
started=$(date +%s)

echo "== 1/3 Training a U-Net (base width 16, 8 short epochs) on $sample/scene_1 and scene_2"
# A fixed, small budget so the demo ends in minutes on 2 CPU cores; real work uses the defaults.
"$qgis_process" run unet_buildings:train -- \
  IMAGES="$sample/scene_1.tif" IMAGES="$sample/scene_2.tif" \
  LABELS="$sample/scene_1_labels.tif" LABELS="$sample/scene_2_labels.tif" \
  BUILDING_VALUES=2 PRESET=default EPOCHS=8 PATCHES_PER_EPOCH=40 BATCH_SIZE=8 BASE_WIDTH=16 SEED=7 \
  DEVICE=auto OUTPUT_MODEL="$out/model.pt" | grep -E "epoch|BEST_EPOCH|VAL_IOU|DEVICE_USED" || true
test -s "$out/model.pt"

echo "== 2/3 Extracting buildings from the held-out scene $sample/scene_3.tif"
"$qgis_process" run unet_buildings:extract -- \
  INPUT="$sample/scene_3.tif" MODEL="$out/model.pt" \
  OUTPUT_PROBABILITY="$out/probability.tif" OUTPUT_MASK="$out/mask.tif" OUTPUT="$out/buildings.gpkg" \
  MIN_AREA=4 SIMPLIFY=0.3 >/dev/null
test -s "$out/buildings.gpkg"

echo "== 3/3 Evaluating the mask against $sample/scene_3_labels.tif (building = class 2)"
"$qgis_process" run unet_buildings:evaluate -- \
  PREDICTION="$out/mask.tif" LABELS="$sample/scene_3_labels.tif" BUILDING_VALUES=2 \
  OUTPUT_REPORT="$out/evaluation.html" OUTPUT_ERROR_MAP="$out/error_map.tif" >/dev/null
test -s "$out/evaluation.json"

.venv/bin/python - "$out/evaluation.json" <<'PY'
import json, sys
from model.report import text_report
print(text_report(json.load(open(sys.argv[1]))))
PY
echo
echo "Done in $(( $(date +%s) - started )) s. Outputs in $out/:"
echo "  model.pt (model file), model_history.csv (per-epoch scores), probability.tif, mask.tif,"
echo "  buildings.gpkg (building polygons), error_map.tif (0 TN, 1 FP, 2 FN, 3 TP), evaluation.html / .json"
