"""The detector comparison of benchmarks/results/detectors/README.md ("Which detector") from the JSON of
benchmarks/detectors/run.sh.

    python tools/detector_table.py benchmarks/results/detectors
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DETECTORS = {"auto": "SCRFD-500M (bundle, 320)", "yunet": "YuNet 2023mar int8", "mtcnn": "MTCNN"}


def _load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main(folder: Path) -> None:
    print("| detector | MFR2 bfm-verify: pairs failed | right, all 848 | MFR2 10-fold: Baseline 1 | ours | "
          "LFW raw: median px (after mean offset) | found | masked: median px (after mean offset) | found |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, label in DETECTORS.items():
        verify = _load(folder, f"mfr2_verify_{key}") or {}
        results = (_load(folder, f"mfr2_eval_{key}") or {}).get("results", {})
        raw = _load(folder, f"landmarks_raw_{key}") or {}
        masked = _load(folder, f"landmarks_masked_{key}") or {}

        def acc(method: str, results: dict = results) -> str:
            r = results.get(method)
            return f"{r['accuracy']:.2f} ± {r['std']:.2f}" if r else "-"

        def lm(report: dict) -> tuple[str, str]:
            if not report:
                return "-", "-"
            return (f"{report['median_px']:.2f} ({report['median_px_after_mean_offset']:.2f})",
                    f"{report['found']}/{report['photos']}")

        raw_px, raw_found = lm(raw)
        masked_px, masked_found = lm(masked)
        right = f"{verify['accuracy_all_pairs']:.2f}" if verify else "-"
        print(f"| {label} | {verify.get('failed', '-')} | {right} | {acc('Baseline 1')} | {acc('ours')} | "
              f"{raw_px} | {raw_found} | {masked_px} | {masked_found} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/detectors"))
