"""The layers of ARCHITECTURE.md, checked: every module of bfm belongs to one layer, imports only from its own
layer or lower ones (imports inside functions and for type checking count too), and no modules import each
other in a circle. The names of the contract are defined once, and the routing rule has no copy.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bfm_deploy", "bfm_models", "bfm_train")

# Lowest first (ARCHITECTURE.md, "Layers"): a module named in a layer belongs to it, any other to the lowest layer
# whose wildcard matches it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("bfm_deploy", "bfm_deploy.contract", "bfm_deploy.errors", "bfm_deploy.registry", "bfm_deploy.optional",
              "bfm_deploy.atomic", "bfm_deploy.progress", "bfm_deploy.onnx_graph", "bfm_deploy.json_fields",
              "bfm_deploy.cpu_features")),
    ("data", ("bfm_deploy.alignment", "bfm_deploy.images", "bfm_deploy.tensor", "bfm_deploy.routing",
              "bfm_deploy.datasets", "bfm_deploy.results", "bfm_deploy.metrics", "bfm_deploy.plotting", "bfm_deploy.matching",
              "bfm_deploy.detect.detection", "bfm_deploy.detect.fallback_steps", "bfm_deploy.detect.spec")),
    ("models", ("bfm_models", "bfm_models.*")),
    ("bundle", ("bfm_deploy.manifest", "bfm_deploy.bundle", "bfm_deploy.engine.spec", "bfm_deploy.engine.availability")),
    ("backends", ("bfm_deploy.backends", "bfm_deploy.backends.*", "bfm_deploy.engine.*", "bfm_deploy.cuda_runtime",
                  "bfm_deploy.detect", "bfm_deploy.detect.*")),
    ("pipeline", ("bfm_deploy.pipeline", "bfm_deploy.verifier")),
    ("tools", ("bfm_deploy.engine.cli", "bfm_deploy.*")),
    ("training", ("bfm_train", "bfm_train.*")),
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the bfm modules it imports anywhere in its code (a name imported from a package counts as the
    submodule when there is one)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                candidates = [f"{base}.{alias.name}" for alias in node.names]  # a name, else its module
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    targets.add(candidate)
        edges[name] = targets
    return edges


def _layer(module: str) -> int:
    """A module named in a layer is in that layer; otherwise the lowest layer with a matching wildcard."""
    for index, (_, patterns) in enumerate(LAYERS):
        if module in patterns:
            return index
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns if "*" in pattern):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to ARCHITECTURE.md")


def test_every_module_has_a_layer() -> None:
    modules = _modules()
    assert len(modules) > 150  # the walk found the packages
    for module in modules:
        _layer(module)


def test_no_import_goes_up_a_layer() -> None:
    offenders = []
    for module, targets in _imports(_modules()).items():
        for target in sorted(targets):
            if _layer(target) > _layer(module):
                offenders.append(f"{module} ({LAYERS[_layer(module)][0]}) imports {target} "
                                 f"({LAYERS[_layer(target)][0]})")
    assert not offenders, "\n".join(offenders)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circle() -> None:
    assert not _cycles(_imports(_modules()))


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# --- defined once ------------------------------------------------------------------------------------------------

CONTRACT_NAMES = ("NETWORKS", "ROUTES", "CROP_SIZE", "INPUT_SHAPE", "EMBEDDING_SIZE", "UNMASKED", "MASKED",
                  "FACE_MEAN", "FACE_STD", "INPUT_NAME", "OUTPUT_NAMES", "OUTPUT_SIZES", "MIN_OPSET")
# Numbers of the tensor contract; detectors have their own input contracts, and the hand-written reference
# pipeline of bfm-bench is deliberately written without bfm's code (it is what bfm is measured against).
CONTRACT_NUMBERS = (112, 127.5)
OWN_NUMBERS = ("bfm_deploy/contract.py", "bfm_deploy/bench/reference.py", "bfm_deploy/detect/mtcnn.py",
               "bfm_deploy/detect/choice.py")


def _code_constants(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and id(node) not in docstrings]


def test_contract_names_and_numbers_are_defined_once() -> None:
    offenders = []
    for module, path in _modules().items():
        relative = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), relative)
        for node in tree.body:  # module-level definitions of a contract name
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            offenders += [f"{relative}:{node.lineno} defines {t.id}" for t in targets
                          if isinstance(t, ast.Name) and t.id in CONTRACT_NAMES and module != "bfm_deploy.contract"]
        if relative not in OWN_NUMBERS:
            offenders += [f"{relative}:{c.lineno} restates {c.value!r}" for c in _code_constants(tree)
                          if not isinstance(c.value, bool) and isinstance(c.value, (int, float))
                          and c.value in CONTRACT_NUMBERS]
    assert not offenders, "\n".join(offenders)


def test_the_routing_rule_has_no_copy() -> None:
    # The rule (a face is masked when P(masked) >= the bundle's threshold; a pair goes to E_P when either face
    # is) lives in bfm_deploy/routing.py; anything else deciding it from logits or probabilities is a copy.
    offenders = []
    for module, path in _modules().items():
        if module == "bfm_deploy.routing":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if ("argmax" in code and "MASKED" in code) or ("mask_threshold" in code and (">=" in code or " < " in code)
                                                          and "if " not in code and "raise" not in code):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
