"""The runtime package stands alone: bfm_deploy imports nothing from bfm_train or bfm_models at module level, and
each of its modules imports with only the extras it belongs to (no exemptions).

Every optional dependency of every extra is blocked (``sys.modules[name] = None``, as if not installed); a base
module must import anyway, an extra's module with only that extra unblocked.
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "bfm_deploy"

# The import names of each extra's distributions (setup.cfg [options.extras_require]).
SERVE_IMPORTS = ("fastapi", "uvicorn", "httpx", "multipart", "starlette", "pydantic")
EXTRA_IMPORTS = {
    "serve": SERVE_IMPORTS,
    "ray": ("ray", *SERVE_IMPORTS),  # the Ray app is the serve app on replicas: installed with bfm[serve,ray]
    "gallery": ("faiss", "psycopg"),
    "train": ("torch", "onnx", "safetensors", "yaml", "dlib", "face_recognition_models", "bfm_models", "bfm_train"),
    "gpu": ("tensorrt", "cuda", "onnx"),
    "openvino": ("openvino",),
    "explain": ("torch", "safetensors", "bfm_models"),
}
# Runtime modules that belong to an extra; every other runtime module is part of the base install.
EXTRA_MODULES = {
    "bfm_deploy.serve.app": "serve",
    "bfm_deploy.serve.body_limit": "serve",
    "bfm_deploy.serve.failures": "serve",
    "bfm_deploy.serve.inputs": "serve",
    "bfm_deploy.serve.schemas": "serve",
    "bfm_deploy.serve.state": "serve",
    "bfm_deploy.serve.routes.gallery": "serve",
    "bfm_deploy.serve.routes.health": "serve",
    "bfm_deploy.serve.routes.verify": "serve",
    "bfm_deploy.serve.routes.explain": "serve",
    "bfm_deploy.serve.routes.page": "serve",
    "bfm_deploy.serve.explaining": "serve",
    "bfm_deploy.serve.client": "serve",
    "bfm_deploy.serve.process": "serve",
    "bfm_deploy.serve.ray_app": "ray",
    "bfm_deploy.engine.build": "gpu",
    "bfm_deploy.engine.loaders": "gpu",
    "bfm_deploy.engine.fp16_onnx": "gpu",
}
# bfm_models sits just above the runtime's lowest layer and uses nothing else of it.
MODELS_MAY_IMPORT = ("bfm_deploy.contract", "bfm_deploy.errors", "bfm_deploy.registry", "bfm_deploy.onnx_graph",
                     "bfm_deploy.alignment")

CODE = """
import importlib, sys
blocked, names = sys.argv[1].split(","), sys.argv[2:]
for name in blocked:
    sys.modules[name] = None
for name in names:
    importlib.import_module(name)
"""


def _modules(package: Path) -> list[str]:
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _absolute_imports(package: Path) -> list[tuple[str, int, str]]:
    """(file, line, module) of every absolute import in ``package``, at any depth of the code."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            found += [(str(path.relative_to(ROOT)), node.lineno, name) for name in names]
    return found


def _blocked(except_extra: str | None = None) -> list[str]:
    allowed = set(EXTRA_IMPORTS[except_extra]) if except_extra else set()
    return sorted({name for names in EXTRA_IMPORTS.values() for name in names} - allowed)


def _import(modules: list[str], blocked: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CODE, ",".join(blocked), *modules], capture_output=True, text=True,
                          timeout=180, cwd=ROOT)


def test_bfm_deploy_never_imports_the_training_side() -> None:
    offenders = [f"{file}:{line} imports {name}" for file, line, name in _absolute_imports(RUNTIME)
                 if name.split(".")[0] == "bfm_train"]
    assert not offenders, "\n".join(offenders)


def test_bfm_models_imports_only_the_runtime_core() -> None:
    offenders = [f"{file}:{line} imports {name}" for file, line, name in _absolute_imports(ROOT / "bfm_models")
                 if name.split(".")[0] in ("bfm_deploy", "bfm_train") and name not in MODELS_MAY_IMPORT]
    assert not offenders, "\n".join(offenders)


def test_extras_in_this_test_are_those_of_setup_cfg() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    declared = set(config["options.extras_require"]) - {"dev", "test"}
    assert declared == set(EXTRA_IMPORTS), "an extra was added or removed: say which modules it brings"
    assert set(EXTRA_MODULES) <= set(_modules(RUNTIME)), "a module named here no longer exists"


def test_the_base_install_imports_every_other_runtime_module() -> None:
    modules = [m for m in _modules(RUNTIME) if m not in EXTRA_MODULES]
    assert len(modules) > 80  # the walk found the package
    result = _import(modules, _blocked())
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("extra", sorted(set(EXTRA_MODULES.values())))
def test_an_extras_modules_import_with_that_extra_alone(extra: str) -> None:
    modules = [m for m, owner in EXTRA_MODULES.items() if owner == extra]
    missing = [name for name in EXTRA_IMPORTS[extra] if name != "cuda" and importlib.util.find_spec(name) is None]
    if missing:
        # TensorRT cannot be installed here: the module must then fail on the extra's own import and nothing else.
        for module in modules:
            result = _import([module], _blocked())
            # a blocked top-level name fails as "import of X halted", a submodule of it as "'X' is not a package"
            assert result.returncode != 0 and any(f"import of {name} halted" in result.stderr
                                                  or f"'{name}' is not a package" in result.stderr
                                                  for name in EXTRA_IMPORTS[extra]), result.stderr[-2000:]
        pytest.skip(f"the {extra} extra is not installed ({', '.join(missing)})")
    result = _import(modules, _blocked(extra))
    assert result.returncode == 0, result.stderr[-2000:]


def test_blocking_works() -> None:
    # the harness itself: a blocked module really fails to import
    result = _import(["bfm_deploy.serve.app"], _blocked())
    assert result.returncode != 0 and "halted" in result.stderr
