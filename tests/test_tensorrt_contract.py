"""Our TensorRT and cuda-python code type-checks against the real APIs of TensorRT 10 and 11.

No GPU, TensorRT or cuda-python install is needed: ``tools/trt_stubs/contract_env.py`` installs each
TensorRT bindings wheel into a private folder, satisfies its native dependencies with compiled stand-in
libraries and runs pybind11-stubgen on it; a cuda-python (cuda-bindings) wheel, also installed privately,
gets stubs from its own docstrings. mypy (strict) then checks
bfm_deploy/engine, bfm_deploy/backends/trt.py and bfm_deploy/cuda_runtime.py against each stub set, and a
snippet of TensorRT 8 / misspelt calls proves the check has teeth.

Cached under ``$BFM_TRT_CONTRACT_CACHE`` (default ``~/.cache/bfm-trt-contract``), keyed by wheel versions:
the first run downloads two ~3 MB TensorRT and two ~12 MB cuda-bindings wheels and takes up to a minute,
later runs a few seconds. Where the
wheels cannot be downloaded the tests skip, except under CI (``$CI`` set), where they fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_ENV = ROOT / "tools" / "trt_stubs" / "contract_env.py"
EXIT_DOWNLOAD_FAILED = 3  # contract_env.py's status for "could not download the wheel"

# One TensorRT 10.x with a CUDA 12 cuda-python, one TensorRT 11.x with a CUDA 13 one: the code must hold
# for both APIs.
BINDINGS = [
    ("tensorrt-cu12-bindings==10.16.1.11", "cuda-bindings==12.9.4"),
    ("tensorrt-cu13-bindings==11.4.0.106", "cuda-bindings==13.4.4"),
]

OUR_GPU_CODE = ["bfm_deploy/engine", "bfm_deploy/backends/trt.py", "bfm_deploy/cuda_runtime.py"]

MYPY_CONFIG = """\
[mypy]
strict = True
follow_imports = silent
python_version = {python}
[mypy-tqdm.*]
ignore_missing_imports = True
[mypy-tensorrt_bindings.*,tensorrt,cuda.*]
# Generated stubs: use their types, do not lint them.
ignore_errors = True
"""


def _cache_root() -> Path:
    env = os.environ.get("BFM_TRT_CONTRACT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "bfm-trt-contract"


@pytest.fixture(scope="module", params=BINDINGS, ids=lambda p: f"trt{p[0].split('==')[1]}-cuda{p[1].split('==')[1]}")
def stubs(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(MYPYPATH for this TensorRT and cuda-python version, a cache key)."""
    requirement, cuda = request.param
    result = subprocess.run(
        [sys.executable, str(CONTRACT_ENV), "--cache", str(_cache_root()), "--cuda", cuda, requirement],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode == EXIT_DOWNLOAD_FAILED and not os.environ.get("CI"):
        pytest.skip(f"could not download {requirement} (offline?): {result.stderr.strip()[-300:]}")
    assert result.returncode == 0, f"preparing stubs for {requirement} failed:\n{result.stderr}"
    return result.stdout.strip().splitlines()[-1], f"{requirement}-{cuda}".replace("==", "-")


def _mypy(stub_path: str, key: str, targets: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG.format(python=f"{sys.version_info.major}.{sys.version_info.minor}"))
    env = dict(os.environ, MYPYPATH=stub_path)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(_cache_root() / f"mypy-{key}"),
         "--no-color-output", "--show-error-codes", *targets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_gpu_code_matches_the_real_tensorrt_and_cuda_python_api(stubs: tuple[str, str], tmp_path: Path) -> None:
    result = _mypy(*stubs, OUR_GPU_CODE, tmp_path)
    assert result.returncode == 0, f"mypy against {stubs[1]} stubs:\n{result.stdout}{result.stderr}"
    assert "Success" in result.stdout


# Each line marked "expect-error" must be reported, and nothing else: TensorRT 8 calls removed in 10, a
# misspelt method, wrong argument counts, a wrong unpacking of a cuda-python result tuple.
BROKEN = """\
import tensorrt as trt
from cuda.bindings import runtime as cudart


def trt8_build(builder: trt.Builder, network: trt.INetworkDefinition, config: trt.IBuilderConfig) -> None:
    builder.build_engine(network, config)  # expect-error
    config.max_workspace_size = 1 << 30  # expect-error


def trt8_run(context: trt.IExecutionContext, engine: trt.ICudaEngine) -> None:
    context.execute_async_v2([0, 0], 0)  # expect-error
    engine.get_binding_index("input")  # expect-error
    context.set_tensor_adress("input", 0)  # expect-error
    context.execute_async_v3()  # expect-error
    context.execute_async_v3(0)
    context.set_input_shape("input", (1, 3, 112, 112))


def cuda_calls() -> None:
    cudart.cudaStreamCreat()  # expect-error
    cudart.cudaMemcpyAsync(0, 0, 16)  # expect-error
    err, count, extra = cudart.cudaGetDeviceCount()  # expect-error
    err2, stream = cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking)
"""


def test_contract_catches_removed_and_misspelt_calls(stubs: tuple[str, str], tmp_path: Path) -> None:
    snippet = tmp_path / "broken_gpu_code.py"
    snippet.write_text(textwrap.dedent(BROKEN))
    expected = {n for n, line in enumerate(BROKEN.splitlines(), start=1) if "expect-error" in line}
    result = _mypy(*stubs, [str(snippet)], tmp_path)
    reported = {int(m.group(1)) for m in re.finditer(rf"{re.escape(snippet.name)}:(\d+): error:", result.stdout)}
    assert result.returncode == 1, result.stdout + result.stderr
    assert reported == expected, f"expected errors on lines {sorted(expected)}, mypy said:\n{result.stdout}"
