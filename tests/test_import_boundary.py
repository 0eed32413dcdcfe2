"""The runtime package stands alone: bfm_deploy imports nothing from bfm_train, and imports without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

RUNTIME = Path(__file__).resolve().parents[1] / "bfm_deploy"
TORCH_MODULES = ("bfm_deploy.models",)  # the torch modules themselves: what the torch backend and --flops load
TENSORRT_MODULES = ("bfm_deploy.engine.build", "bfm_deploy.engine.loaders")  # the gpu extra's engine builder


def _modules() -> list[str]:
    names = []
    for path in sorted(RUNTIME.rglob("*.py")):
        parts = path.relative_to(RUNTIME.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_bfm_deploy_never_imports_bfm_train() -> None:
    offenders = []
    for path in sorted(RUNTIME.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            offenders += [f"{path.relative_to(RUNTIME.parent)}:{node.lineno} imports {n}" for n in names
                          if n == "bfm_train" or n.startswith("bfm_train.")]
    assert not offenders, "\n".join(offenders)


def test_every_runtime_module_imports_without_torch() -> None:
    modules = [m for m in _modules() if not m.startswith(TORCH_MODULES) and m not in TENSORRT_MODULES]
    assert len(modules) > 40  # the walk found the package
    code = "import importlib, sys\nsys.modules['torch'] = None\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
