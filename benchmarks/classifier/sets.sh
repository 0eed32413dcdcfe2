#!/usr/bin/env bash
# The data sets C is trained and chosen on (benchmarks/classifier/run.sh, real_masks.sh): the v2 masked twins of
# all LFW (training leaves folds 5-10 out) and three held-out sets on fold 5's identities, as calibration lists.
#   bash benchmarks/classifier/sets.sh     # about 5 min on 2 CPU cores; skips what exists
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${BFM_DATA:-../shared/data}
export BFM_DATA=$DATA
W=work_dirs
mkdir -p $W

# 1. Masked twins for training (all LFW; training leaves folds 5-10 out), the v2 looks.
[ -f $W/lfw_masked_v2/mask_report.json ] || bfm-mask "$DATA/lfw/aligned112" $W/lfw_masked_v2 --seed 0 --workers 2 \
    --templates "$DATA/masktheface" --fabrics "$DATA/masktheface/textures" --fabric-share 0.6 --low-share 0.15 --quiet > /dev/null

# 2. Held-out sets on fold 5's identities: the v2 twins, cloth masks printed with fabric photos, plain cloth
#    masks (another seed), each with the same faces unmasked.
python - "$DATA" <<'EOF'
import sys
from pathlib import Path
from bfm_deploy.datasets import lfw_identities_in_folds, read_lfw_pairs
root = Path(sys.argv[1]) / "lfw"
target = Path("work_dirs/fold5_src")
target.mkdir(parents=True, exist_ok=True)
for name in lfw_identities_in_folds(read_lfw_pairs(root / "pairs.txt", root / "aligned112"), {4}):
    if not (target / name).exists():
        (target / name).symlink_to((root / "aligned112" / name).resolve())
EOF
[ -f $W/fold5_cloth_fabric/mask_report.json ] || bfm-mask $W/fold5_src $W/fold5_cloth_fabric --seed 1 --types cloth \
    --fabrics "$DATA/masktheface/textures" --fabric-share 1.0 --low-share 0.15 --quiet > /dev/null
[ -f $W/fold5_cloth_plain/mask_report.json ] || bfm-mask $W/fold5_src $W/fold5_cloth_plain --seed 1 --types cloth \
    --templates "$DATA/masktheface" --template-share 0.5 --quiet > /dev/null
for set in v2:lfw_masked_v2 fabric:fold5_cloth_fabric plain:fold5_cloth_plain; do
  python tools/mask_calibration_list.py --folds 5 --masked-root "$W/${set#*:}" --out "$W/cal_${set%%:*}_fold5.txt" --quiet
done
cat $W/cal_v2_fold5.txt $W/cal_fabric_fold5.txt $W/cal_plain_fold5.txt > $W/cal_all_fold5.txt
