#!/usr/bin/env bash
# The explanation figures and the mask-region saliency table (issue "See why"), from a clean checkout:
# the masked twins and Baseline 2 as benchmarks/ep_variants/run.sh makes them (bfm-train --resume auto), Baseline 2's
# bundle with route thresholds calibrated on LFW folds 1-5 (training identities), then the figures and the table over
# MFR2 (test data: measured, nothing tuned), for every extractor trained in benchmarks/ep_variants/ as well.
#   bash benchmarks/explain/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${BFM_DATA:-../shared/data}
OUT=benchmarks/results/explain
mkdir -p "$OUT" work_dirs/bundles

[ -f work_dirs/lfw_masked/mask_report.json ] || bfm-mask "$DATA/lfw/aligned112" work_dirs/lfw_masked --seed 0 \
    --workers 2 --templates "$DATA/masktheface" --quiet > /dev/null
BFM_DATA=$DATA bfm-train --config configs/baseline2_mbf.yaml --resume auto --quiet > /dev/null
[ -f work_dirs/calibration_pairs.txt ] || python tools/lfw_calibration_pairs.py --data-dir "$DATA" --folds 1-5 \
    --masked-root work_dirs/lfw_masked --out work_dirs/calibration_pairs.txt
export_bundle() {  # export_bundle RUN BUNDLE: the run's extractors with the demo's classifier, calibrated thresholds
  [ -f "work_dirs/bundles/$2/manifest.json" ] || bfm-export "work_dirs/$1" --out "work_dirs/bundles/$2" \
      --classifier engines/demo --calibrate work_dirs/calibration_pairs.txt --no-torch-weights --detector none --quiet
}
export_bundle baseline2_mbf baseline2

python tools/explain_figures.py fig4 --data-dir "$DATA" --compare "Baseline 1=engines/demo:full" \
    --compare "Baseline 2=work_dirs/bundles/baseline2:full" --compare "ours=engines/demo" \
    --plot "$OUT/fig4_mfr2.png" --json-out "$OUT/fig4_mfr2.json"
python tools/explain_figures.py fig2 --data-dir "$DATA" --compare "E_F (w600k_mbf)=engines/demo:full" \
    --compare "Baseline 2=work_dirs/bundles/baseline2:full" --compare "E_P (ours)=engines/demo:partial" \
    --plot "$OUT/fig2_mfr2.png"

METHODS=(--compare "E_F (Baseline 1, w600k_mbf)=engines/demo:full" --compare "E_P (ours, shipped)=engines/demo:partial"
         --compare "Baseline 2=work_dirs/bundles/baseline2:full")
# The E_P variants and all-identity Baseline 2s of benchmarks/ep_variants/ (20-40 minutes of training each on 2 cores;
# a finished run resumes in seconds): VARIANTS="distill" bash benchmarks/explain/run.sh measures fewer.
for run in ${VARIANTS-demo_mbf_distill demo_mbf_distill_w10 demo_mbf_all demo_mbf_all_g5 demo_mbf_all_l3 baseline2_mbf_all baseline2_mbf_all_l3}; do
  BFM_DATA=$DATA bfm-train --config "configs/$run.yaml" --resume auto --quiet > /dev/null
  export_bundle "$run" "$run"
  case $run in
    baseline2_*) METHODS+=(--compare "Baseline 2 (${run#baseline2_mbf_})=work_dirs/bundles/$run:full") ;;
    *) METHODS+=(--compare "E_P (${run#demo_mbf_})=work_dirs/bundles/$run:partial") ;;
  esac
done
python tools/saliency_share.py --data-dir "$DATA" "${METHODS[@]}" --json-out "$OUT/saliency_share.json" \
    --md-out "$OUT/saliency_share.md"
