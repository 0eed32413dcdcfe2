#!/usr/bin/env bash
# Issue "Real masked photos": the real-photo set, C11 trained on it, the choice on validation data only, the demo
# bundle re-exported with it, and only then the test figures.
#   bash benchmarks/classifier/real_masks.sh [SOURCE]    # about 45 min on 2 shared CPU cores
# SOURCE: a copy of chandrikadeb7/Face-Mask-Detection (MIT), a checkout or its bare git directory (default
# work_dirs/face-mask-detection). Writes benchmarks/results/classifier/real_*.json and updates engines/demo.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${BFM_DATA:-../shared/data}
export BFM_DATA=$DATA
SRC=${1:-work_dirs/face-mask-detection}
OUT=benchmarks/results/classifier
W=work_dirs
mkdir -p "$OUT" $W/bundles

# 1. The real set, detected and aligned by the demo bundle's detector with its fallback chain. The split follows
#    each file's bytes: it must be the committed one.
[ -f $W/real_masks/report.json ] || bfm-real-masks "$SRC" $W/real_masks --bundle engines/demo --backend ort \
    --json-out $W/real_masks_report.json --quiet
cmp $W/real_masks/split.tsv configs/face_mask_detection_split.tsv

# 2. The v2 twins and the held-out fold-5 sets of benchmarks/classifier/run.sh (steps 1 and 2), then the choice set:
#    fold 5's "all" plus the real validation split.
bash benchmarks/classifier/sets.sh
{ cat $W/cal_all_fold5.txt; sed 's#^#real_masks/#' $W/real_masks/val.txt; } > $W/cal_all_fold5_real_val.txt

# 3. C11: C9's recipe plus the real train split.
bfm-train --config configs/demo_classifier_v11.yaml --resume auto --quiet > /dev/null

# 4. Candidates, each at its mask threshold calibrated on the choice set: C9 (the classifier shipped before) and C11.
if [ ! -f $W/bundles/demo_c9/manifest.json ]; then
  rm -rf $W/c9_tree && mkdir -p $W/c9_tree
  git archive 368c849 engines/demo | tar -x -C $W/c9_tree   # the demo bundle with C9
  rm -rf $W/bundles/demo_c9 && mv $W/c9_tree/engines/demo $W/bundles/demo_c9
fi
rm -rf $W/bundles/demo_c9r && cp -r $W/bundles/demo_c9 $W/bundles/demo_c9r
bfm-export --update $W/bundles/demo_c9r --mask-calibration $W/cal_all_fold5_real_val.txt --quiet
rm -rf $W/bundles/demo_c11 && cp -r $W/bundles/demo_c9 $W/bundles/demo_c11
ckpt=$(ls $W/demo_classifier_v11/checkpoints/*.safetensors | tail -1)
bfm-export --update $W/bundles/demo_c11 --classifier "$ckpt" --mask-calibration $W/cal_all_fold5_real_val.txt --quiet
# The rule, fixed before C11 was measured: the highest mean of the balanced accuracies on fold 5's "all" and on the
# real validation split, each candidate at its own threshold.
python tools/mask_heldout.py --bundle c9=$W/bundles/demo_c9 --bundle c9r=$W/bundles/demo_c9r --bundle c11=$W/bundles/demo_c11 \
    --set v2=$W/cal_v2_fold5.txt --set fabric=$W/cal_fabric_fold5.txt --set plain=$W/cal_plain_fold5.txt \
    --set all=$W/cal_all_fold5.txt --set real_val=$W/real_masks/val.txt \
    --json-out "$OUT/real_heldout.json" | tee "$OUT/real_heldout.txt"

# 5. The choice (C11) into engines/demo, the route thresholds again on training pairs as C11 routes them
#    (benchmarks/classifier/run.sh step 4 makes work_dirs/calibration_pairs.txt), then the test figures.
#   bfm-export --update engines/demo --classifier "$ckpt" --mask-calibration $W/cal_all_fold5_real_val.txt
#   bfm-export --update engines/demo --calibrate $W/calibration_pairs.txt
#   python tools/mask_heldout.py --bundle c9=$W/bundles/demo_c9 --bundle ours=engines/demo \
#       --set real_test=$W/real_masks/test.txt --json-out $OUT/real_test.json
#   M=("Baseline 1=engines/demo:full" "ours (C9)=work_dirs/bundles/demo_c9" "ours=engines/demo")
#   bfm-eval --dataset mfr2 --compare "${M[@]}" --json-out benchmarks/results/accuracy_mfr2.json --plot benchmarks/results/accuracy_mfr2.png
#   bfm-eval --dataset lfw --folds 6-10 --compare "${M[@]}" --json-out benchmarks/results/accuracy_lfw.json --plot benchmarks/results/accuracy_lfw.png
#   bfm-eval --dataset masked-lfw --folds 6-10 --compare "${M[@]}" --json-out benchmarks/results/accuracy_masked-lfw.json --plot benchmarks/results/accuracy_masked-lfw.png
#   bash benchmarks/detectors/run.sh     # the MFR2 user path (bfm-verify --pairs) and the detector table
