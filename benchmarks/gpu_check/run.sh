#!/usr/bin/env bash
# GPU check in one command: exports a bundle if needed, checks torch CUDA FP16, the cuda-python
# stream/pinned-copy path and (where importable) TensorRT against CPU results, and prints a timing table.
# Usage: benchmarks/gpu_check/run.sh [--bundle DIR] [--work DIR] [--iterations N]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
