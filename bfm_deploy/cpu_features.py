"""What this CPU can do for inference: the instruction-set flags a CPU engine uses (Linux /proc/cpuinfo).

Measured with OpenVINO on ``engines/demo/full.onnx`` (benchmarks/results/openvino_cpu.md): on a 2-core Xeon with
AVX-512 and AVX-512 BF16 but no AMX, FP32 ran 220 faces/s at batch 64 and BF16 126. BF16 is expected to pay
where AMX does the matrix work (Sapphire Rapids and later Xeons; not measured here): ``bf16_fast`` says AMX,
``bf16_capable`` either.
"""

from __future__ import annotations

from pathlib import Path

# The flags reported (in /proc/cpuinfo's spelling), those that decide a CPU engine's kernels.
REPORTED = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The ``flags`` of the first CPU; empty where the file is absent (not Linux) or unreadable."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def capabilities(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """The ``REPORTED`` flags, each present or not (for --json and bfm-bench reports)."""
    flags = cpu_flags() if flags is None else flags
    return {name: name in flags for name in REPORTED}


def bf16_capable(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bfloat16 at all (AMX or AVX-512 BF16)."""
    flags = cpu_flags() if flags is None else flags
    return any(name in flags for name in BF16_FLAGS)


def bf16_fast(flags: frozenset[str] | None = None) -> bool:
    """Whether bfloat16 is the fast precision here: AMX tiles (see the module doc)."""
    flags = cpu_flags() if flags is None else flags
    return "amx_bf16" in flags


def avx512(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return "avx512f" in flags
