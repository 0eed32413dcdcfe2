#!/usr/bin/env bash
# Mask classifier C on real masks (issue "Real masks"): trains the candidates, chooses one on held-out TRAINING
# identities (LFW fold 5, never seen by them), and only then measures the choice on the test sets.
#   bash benchmarks/classifier/run.sh     # about 110 min on 2 shared CPU cores; training runs resume (--resume auto)
# Writes benchmarks/results/classifier/heldout.{json,txt}. The choice (the best balanced accuracy on the 'all'
# set) goes into the demo bundle and is measured on the test sets by the commands at the end of this file.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${BFM_DATA:-../shared/data}
export BFM_DATA=$DATA
OUT=benchmarks/results/classifier
W=work_dirs
mkdir -p "$OUT" "$W/bundles"

# 1-2. Masked twins for training and the held-out fold-5 sets.
bash benchmarks/classifier/sets.sh

# The C shipped before this work (commit 0fedc0f's engines/demo; it saw fold 5 in training: optimistic there).
if [ ! -f $W/bundles/demo_before/manifest.json ]; then
  rm -rf $W/before_tree && mkdir -p $W/before_tree
  git archive 0fedc0f engines/demo | tar -x -C $W/before_tree
  rm -rf $W/bundles/demo_before && mv $W/before_tree/engines/demo $W/bundles/demo_before
fi

# 3. Candidates (configs/demo_classifier_v*.yaml say what each adds), each with its mask threshold calibrated on
#    all three held-out sets together.
for v in 2 4 5 6 7 8 9 10; do
  bfm-train --config configs/demo_classifier_v$v.yaml --resume auto --quiet > /dev/null
  rm -rf $W/bundles/demo_c$v && cp -r engines/demo $W/bundles/demo_c$v
  ckpt=$(ls $W/demo_classifier_v$v/checkpoints/*.safetensors | tail -1)
  bfm-export --update $W/bundles/demo_c$v --classifier "$ckpt" --mask-calibration $W/cal_all_fold5.txt --quiet
done
python tools/mask_heldout.py --bundle before=work_dirs/bundles/demo_before \
    $(for v in 2 4 5 6 7 8 9 10; do echo "--bundle c$v=$W/bundles/demo_c$v"; done) \
    --set v2=$W/cal_v2_fold5.txt --set fabric=$W/cal_fabric_fold5.txt --set plain=$W/cal_plain_fold5.txt \
    --set all=$W/cal_all_fold5.txt --json-out "$OUT/heldout.json" | tee "$OUT/heldout.txt"

# 4. The choice, C9 (configs/demo_classifier_v9.yaml), shipped and then measured on the test sets:
#   bfm-export --update engines/demo --classifier work_dirs/demo_classifier_v9/checkpoints/step-00002256.safetensors \
#       --mask-calibration work_dirs/cal_all_fold5.txt
#   bfm-mask "$DATA/lfw/aligned112" work_dirs/lfw_masked --seed 0 --workers 2 --templates "$DATA/masktheface"
#   python tools/lfw_calibration_pairs.py --folds 1-5 --masked-root work_dirs/lfw_masked --out work_dirs/calibration_pairs.txt
#   bfm-export --update engines/demo --calibrate work_dirs/calibration_pairs.txt   # route thresholds, C9's routing
#   M=("Baseline 1=engines/demo:full" "ours (C before)=work_dirs/bundles/demo_before" "ours=engines/demo")
#   bfm-eval --dataset mfr2 --compare "${M[@]}" --json-out benchmarks/results/accuracy_mfr2.json --plot benchmarks/results/accuracy_mfr2.png
#   bfm-eval --dataset lfw --folds 6-10 --compare "${M[@]}" --json-out benchmarks/results/accuracy_lfw.json --plot benchmarks/results/accuracy_lfw.png
#   bfm-eval --dataset masked-lfw --folds 6-10 --compare "${M[@]}" --json-out benchmarks/results/accuracy_masked-lfw.json --plot benchmarks/results/accuracy_masked-lfw.png
