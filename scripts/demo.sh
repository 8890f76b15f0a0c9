#!/usr/bin/env bash
# The main job, headless through qgis_process, on the bundled sample: adapt the starter model to
# scenes 1 and 2, extract buildings from the held-out scene 3, score them against its labels.
# Run through `make demo`, which sets everything up first.
set -euo pipefail
# qgis_process chatter goes to a log; on failure its end is shown
run() {
  local log=$1; shift
  "$qgis_process" run "$@" >"$log" 2>&1 || { tail -n 30 "$log"; echo "Failed: see $log" >&2; exit 1; }
}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
sample=resources/sample
out=${DEMO_OUTPUT:-demo-output}
qgis_process=scripts/qgis_process.sh
mkdir -p "$out"
started=$(date +%s)

echo "== 1/3 Adapting the starter model (8 short epochs) to $sample/scene_1 and scene_2"
# A fixed, small budget so the demo ends in minutes on 2 CPU cores; real work uses the defaults.
run "$out/train.log" unet_buildings:train -- \
  IMAGES="$sample/scene_1.tif" IMAGES="$sample/scene_2.tif" \
  LABELS="$sample/scene_1_labels.tif" LABELS="$sample/scene_2_labels.tif" \
  BUILDING_VALUES=2 PRESET=default EPOCHS=8 PATCHES_PER_EPOCH=40 BATCH_SIZE=8 SEED=7 \
  DEVICE=auto OUTPUT_MODEL="$out/model.pt"
.venv/bin/python - "$out/model_history.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print(f"{'epoch':>7} {'train loss':>10} {'val loss':>9} {'val IoU':>8} {'seconds':>8}")
for r in rows:  # epoch 0: the starter model scored on the validation areas before any step
    epoch = f"{r['epoch']} start" if r["epoch"] == "0" else r["epoch"]
    train_loss = f"{float(r['train_loss']):>10.4f}" if r.get("train_loss") else f"{'':>10}"
    print(f"{epoch:>7} {train_loss} {float(r['val_loss']):>9.4f} "
          f"{float(r['val_iou_tuned']):>8.4f} {float(r['seconds']):>8.1f}")
PY
sed -n 's/^OUTCOME:\s*//p' "$out/train.log"

echo "== 2/3 Extracting buildings from the held-out scene $sample/scene_3.tif"
run "$out/extract.log" unet_buildings:extract -- \
  INPUT="$sample/scene_3.tif" MODEL="$out/model.pt" \
  OUTPUT_PROBABILITY="$out/probability.tif" OUTPUT_MASK="$out/mask.tif" OUTPUT="$out/buildings.gpkg" \
  MIN_AREA=4 SIMPLIFY=0.3

echo "== 3/3 Evaluating the mask against $sample/scene_3_labels.tif (building = class 2)"
run "$out/evaluate.log" unet_buildings:evaluate -- \
  PREDICTION="$out/mask.tif" LABELS="$sample/scene_3_labels.tif" BUILDING_VALUES=2 \
  OUTPUT_REPORT="$out/evaluation.html" OUTPUT_ERROR_MAP="$out/error_map.tif"

.venv/bin/python - "$out/evaluation.json" <<'PY'
import json, sys
from model.evaluation.report import text_report
print(text_report(json.load(open(sys.argv[1]))))
PY
echo
echo "Done in $(( $(date +%s) - started )) s. Outputs in $out/:"
echo "  model.pt (model file), model_history.csv (per-epoch scores), probability.tif, mask.tif,"
echo "  buildings.gpkg (building polygons), error_map.tif (0 TN, 1 FP, 2 FN, 3 TP), evaluation.html / .json,"
echo "  and the qgis_process logs (*.log)"
