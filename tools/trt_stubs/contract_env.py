"""Type stubs of the real TensorRT and cuda-python APIs, for type-checking bfm's GPU code without a GPU.

For one TensorRT bindings wheel (e.g. ``tensorrt-cu12-bindings==10.16.1.11``):
1. ``pip install --no-deps --target`` it into a private folder (both cu12 and cu13 wheels provide the same
   module, so they never share a folder);
2. compile ``standin.c`` into ``libnvinfer.so.N``, ``libnvonnxparser.so.N``, ``libnvinfer_plugin.so.N`` with
   N read from the bindings' own dependency list, so the module imports without TensorRT installed;
3. run ``pybind11-stubgen tensorrt_bindings`` in a subprocess with that folder on PYTHONPATH and the stand-ins
   on LD_LIBRARY_PATH, and add a ``tensorrt`` stub package re-exporting it (``tensorrt`` is what code imports);
4. likewise install one cuda-python runtime (``cuda-bindings==X``) privately and stub it with
   ``cudart_stubgen.py`` (pybind11-stubgen cannot walk that Cython module).
Everything lands in ``CACHE/<wheel>-<version>/`` and ``CACHE/cuda-bindings-<version>/`` (their ``stubs/``
folders are what goes on MYPYPATH) and is reused while the ``complete`` marker is there. Prints both stub
folders joined by os.pathsep, ready for MYPYPATH.

Usage: python contract_env.py --cache DIR --cuda cuda-bindings==VERSION tensorrt-cuXX-bindings==VERSION
"""

from __future__ import annotations

import argparse
import ast
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# library -> the standin.c section that defines its entry points
LIBRARIES = {
    "nvinfer": "STANDIN_NVINFER",
    "nvonnxparser": "STANDIN_NVONNXPARSER",
    "nvinfer_plugin": "STANDIN_NVINFER_PLUGIN",
}


# Exit status when the wheel could not be downloaded (no network / no index): callers may treat it as
# "environment unavailable" rather than "contract broken".
EXIT_DOWNLOAD_FAILED = 3


class StepFailed(SystemExit):
    def __init__(self, message: str, code: int = 1) -> None:
        print(message, file=sys.stderr)
        super().__init__(code)


def run(cmd: list[str], env: dict[str, str] | None = None, code: int = 1) -> None:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise StepFailed(
            f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}",
            code,
        )


def needed_majors(extension: Path) -> dict[str, str]:
    """{'nvinfer': '10', ...}: the sonames the bindings' extension links against (its DT_NEEDED strings)."""
    data = extension.read_bytes()
    majors = {}
    for lib in LIBRARIES:
        match = re.search(rb"\x00lib" + lib.encode() + rb"\.so\.(\d+)\x00", data)
        if not match:
            raise StepFailed(f"{extension} does not name lib{lib}.so.N; not a TensorRT bindings module?")
        majors[lib] = match.group(1).decode()
    return majors


def build_standins(extension: Path, lib_dir: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise StepFailed("no C compiler (cc/gcc) to build the TensorRT stand-in libraries")
    lib_dir.mkdir(parents=True, exist_ok=True)
    for lib, major in needed_majors(extension).items():
        soname = f"lib{lib}.so.{major}"
        run([compiler, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", f"-D{LIBRARIES[lib]}",
             f"-Wl,-soname,{soname}", "-o", str(lib_dir / soname), str(HERE / "standin.c")])


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[(" and 1 or ch in "])" and -1 or 0
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current] if current.strip() else parts


def _fix_def(line: str) -> str:
    """Repair what pybind signatures allow and Python does not: parameters named like keywords (``in``) and a
    required parameter after one with a default (it gets ``= ...``, which only loosens that one call)."""
    match = re.match(r"^(\s*def \w+\()(.*)(\) -> .*:.*)$", line)
    if not match:
        return line
    params, seen_default = [], False
    for raw in _split_top_level(match.group(2)):
        name, sep, rest = raw.strip().partition(":")
        name = name.strip()
        if keyword.iskeyword(name):
            name += "_"
        param = f"{name}{sep}{rest}"
        if "=" in rest or (not sep and "=" in name):
            seen_default = True
        elif seen_default and not name.startswith("*"):
            param += " = ..."
        params.append(param)
    return f"{match.group(1)}{', '.join(params)}{match.group(3)}"


def _builtin_bool(line: str) -> str:
    """tensorrt defines a module-level ``bool`` (the DataType), which shadows the builtin in its own stub:
    every ``-> bool`` would turn into an invalid type. Point annotations at ``builtins.bool`` instead."""
    if re.match(r"^bool\s*:", line) or not re.match(r"^\s*(def |\w+\s*:)", line):
        return line
    return re.sub(r"(?<![\w.])bool\b", "builtins.bool", line)


def fix_stub_syntax(stub: Path) -> None:
    lines = [_builtin_bool(_fix_def(line)) for line in stub.read_text().splitlines()]
    if any("builtins.bool" in line for line in lines):
        lines.insert(1 if lines and lines[0].startswith("from __future__") else 0, "import builtins")
    fixed = "\n".join(lines) + "\n"
    try:
        ast.parse(fixed, filename=str(stub))
    except SyntaxError as exc:
        raise StepFailed(f"{stub}:{exc.lineno}: generated stub is still not valid Python: {exc.msg}") from None
    stub.write_text(fixed)


def _finish(work: Path, home: Path, label: str) -> None:
    (work / "complete").write_text(f"{label}\n")
    try:
        os.replace(work, home)
    except OSError:
        if not (home / "complete").is_file():  # a concurrent run finishing first is fine; anything else is not
            raise


def prepare_cuda(cache: Path, requirement: str) -> Path:
    """Stubs for one cuda-python runtime version (``cuda-bindings==X``), installed privately like TensorRT."""
    name, _, version = requirement.partition("==")
    if name != "cuda-bindings" or not version:
        raise StepFailed(f"expected cuda-bindings==VERSION, got {requirement}")
    home = cache / f"{name}-{version}"
    if (home / "complete").is_file():
        return home / "stubs"
    shutil.rmtree(home, ignore_errors=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{home.name}.", dir=home.parent))
    try:
        site = work / "site"
        # cuda-pathfinder is the one runtime dependency of cuda-bindings (it locates the CUDA libraries).
        run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--target", str(site), requirement, "cuda-pathfinder"], code=EXIT_DOWNLOAD_FAILED)
        env = dict(os.environ, PYTHONPATH=str(site))
        check = "import cuda.bindings as b, sys; sys.exit(0 if b.__version__ == sys.argv[1] else 3)"
        run([sys.executable, "-c", check, version], env=env)
        run([sys.executable, str(HERE / "cudart_stubgen.py"), str(work / "stubs")], env=env)
        shutil.rmtree(site)  # only the stubs are needed from now on
        _finish(work, home, requirement)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return home / "stubs"


def prepare(cache: Path, requirement: str) -> Path:
    name, _, version = requirement.partition("==")
    if not version:
        raise StepFailed(f"pin an exact version: {requirement}")
    home = cache / f"{name}-{version}"
    stubs = home / "stubs"
    if (home / "complete").is_file():
        return stubs
    shutil.rmtree(home, ignore_errors=True)
    home.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{home.name}.", dir=home.parent))
    try:
        site, lib_dir, out = work / "site", work / "lib", work / "stubs"
        run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--target", str(site), requirement], code=EXIT_DOWNLOAD_FAILED)
        extension = next((site / "tensorrt_bindings").glob("tensorrt*.so"), None)
        if extension is None:
            raise StepFailed(f"{requirement} has no tensorrt_bindings/tensorrt*.so")
        build_standins(extension, lib_dir)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(site)  # first on the path: shadows any tensorrt_bindings in site-packages
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib_dir), env.get("LD_LIBRARY_PATH")]))
        check = "import tensorrt_bindings as t, sys; sys.exit(0 if t.__version__ == sys.argv[1] else 3)"
        run([sys.executable, "-c", check, version], env=env)
        run([sys.executable, "-m", "pybind11_stubgen", "tensorrt_bindings", "--output-dir", str(out)], env=env)
        for stub in out.rglob("*.pyi"):
            fix_stub_syntax(stub)
        package = out / "tensorrt"
        package.mkdir()
        (package / "__init__.pyi").write_text(
            "# The tensorrt package re-exports the bindings module (what `import tensorrt` gives).\n"
            "from tensorrt_bindings.tensorrt import *\n\n__version__: str\n"
        )
        _finish(work, home, requirement)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return stubs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--cuda", required=True, help="cuda-bindings==VERSION whose runtime API to stub")
    parser.add_argument("requirement", help="tensorrt-cuXX-bindings==VERSION")
    args = parser.parse_args()
    print(os.pathsep.join([str(prepare(args.cache, args.requirement)), str(prepare_cuda(args.cache, args.cuda))]))


if __name__ == "__main__":
    main()
