#!/usr/bin/env bash
# The GPU check in one command, from the working tree alone (no install): parity of the torch backend's device
# paths against the CPU on real LFW and MFR2 pairs, throughput of each fast-path choice, the routed pipeline,
# batch-1 verify latency, the service under load; gpu_check.json and gpu_check.png in $OUT (or --out DIR).
# See gpu_check.py. For a GPU machine without the shared data: --pack-data DIR here, then BFM_DATA=DIR there.
# Usage: benchmarks/gpu_check/run.sh [--device cpu] [--bundle DIR] [--data-dir DIR] [--out DIR] [--pack-data DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
