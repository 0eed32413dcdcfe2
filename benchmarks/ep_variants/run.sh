#!/usr/bin/env bash
# E_P variants against Baseline 2, on the data and schedule of the shipped demo (issue "Real masks"):
# masked twins from bfm-mask (seed 0, MaskTheFace templates 0.5), LFW identities outside folds 6-10 with two or
# more images, 3 epochs of 65 steps at batch 64, E_P and Baseline 2 from w600k_mbf with layers.0-4 frozen; and
# both on every identity outside folds 6-10 ("all identities": 3 epochs of 108 steps), also with layers.0-2 frozen
# only ("layers 3-7").
# Every run resumes (--resume auto), so this script can be stopped and started again.
#   bash benchmarks/ep_variants/run.sh        # then: python tools/accuracy_table.py ... (printed at the end)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${BFM_DATA:-../shared/data}
OUT=benchmarks/results/ep_variants
mkdir -p "$OUT" work_dirs/bundles

[ -f work_dirs/lfw_masked/mask_report.json ] || bfm-mask "$DATA/lfw/aligned112" work_dirs/lfw_masked --seed 0 \
    --workers 2 --templates "$DATA/masktheface" --quiet > /dev/null
for run in baseline2_mbf demo_mbf_distill demo_mbf_distill_w10 baseline2_mbf_all demo_mbf_all demo_mbf_all_g5 \
    baseline2_mbf_all_l3 demo_mbf_all_l3; do
  BFM_DATA=$DATA bfm-train --config "configs/$run.yaml" --resume auto --quiet > /dev/null
  bfm-train --report "work_dirs/$run"
  mkdir -p "benchmarks/results/training/$run"
  cp "work_dirs/$run"/{config.yaml,metrics.jsonl,report.json,report.png} "benchmarks/results/training/$run/"
done

# Bundles: the shipped demo's classifier (and detector) for all; route thresholds do not enter the 10-fold
# figures (each fold is scored at the threshold chosen on the other nine).
bfm-export work_dirs/baseline2_mbf --out work_dirs/bundles/baseline2 --classifier engines/demo --thresholds 0.25 \
    --no-torch-weights --detector none --overwrite --quiet
for variant in all all_l3; do
  bfm-export "work_dirs/baseline2_mbf_$variant" --out "work_dirs/bundles/baseline2_$variant" --classifier engines/demo \
      --thresholds 0.25 --no-torch-weights --detector none --overwrite --quiet
done
for variant in distill distill_w10 all all_g5 all_l3; do
  bfm-export "work_dirs/demo_mbf_$variant" --out "work_dirs/bundles/$variant" --classifier engines/demo \
      --thresholds 0.25 --no-torch-weights --detector none --overwrite --quiet
done

# The first method's bundle (engines/demo) detects MFR2's faces: the runtime's default detector. Three groups,
# each evaluated in one run: the demo's data ($OUT/{set}.json, table.md), all identities ({set}_all.json,
# table_all.md) and all identities with layers.3-7 trained ({set}_all_l3.json, table_all_l3.md), each with
# Baseline 1 beside its variants.
evaluate() {  # evaluate SUFFIX METHOD...; the table's options in TABLE
  local suffix=$1; shift
  for set in lfw masked-lfw; do
    bfm-eval --dataset "$set" --data-dir "$DATA" --folds 6-10 --compare "$@" --json-out "$OUT/$set$suffix.json" \
        --plot "$OUT/$set$suffix.png" --quiet > /dev/null
  done
  bfm-eval --dataset mfr2 --data-dir "$DATA" --compare "$@" --json-out "$OUT/mfr2$suffix.json" \
      --plot "$OUT/mfr2$suffix.png" --quiet > /dev/null
  python tools/accuracy_table.py "$OUT"/{lfw,masked-lfw,mfr2}"$suffix".json "${TABLE[@]}" > "$OUT/table$suffix.md"
  echo "wrote $OUT/table$suffix.md"
}
TABLE=()
evaluate "" "Baseline 1=engines/demo:full" "Baseline 2=work_dirs/bundles/baseline2:full" "ours=engines/demo" \
    "ours (distill)=work_dirs/bundles/distill" "ours (distill x10)=work_dirs/bundles/distill_w10"
TABLE=(--baseline "Baseline 2 (all identities)" --ours "ours (all identities)")
evaluate _all "Baseline 1=engines/demo:full" "ours (shipped)=engines/demo" \
    "Baseline 2 (all identities)=work_dirs/bundles/baseline2_all:full" "ours (all identities)=work_dirs/bundles/all" \
    "ours (all identities, guided x5)=work_dirs/bundles/all_g5"
TABLE=(--baseline "Baseline 2 (layers 3-7)" --ours "ours (layers 3-7)")
evaluate _all_l3 "Baseline 1=engines/demo:full" "ours (shipped)=engines/demo" \
    "Baseline 2 (layers 3-7)=work_dirs/bundles/baseline2_all_l3:full" "ours (layers 3-7)=work_dirs/bundles/all_l3"
