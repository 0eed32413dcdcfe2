"""Write type stubs for cuda-python's runtime bindings (``cuda.bindings.runtime``), which ship without any.

pybind11-stubgen cannot walk the Cython module (it recurses forever on some values), so this reads what the
module itself documents: each function's first docstring line is its signature (``cudaMemcpyAsync(dst, src,
size_t count, kind: cudaMemcpyKind, stream)``) and its ``Returns`` section lists the ``(error, values...)``
tuple it returns. The stubs are precise where it matters for catching mistakes - function names, argument
names and counts, the number of returned values, enum members, struct attributes - and ``Any`` elsewhere.

Usage: python cudart_stubgen.py OUT_DIR   (writes OUT_DIR/cuda/bindings/runtime.pyi and package markers)
"""

from __future__ import annotations

import builtins
import inspect
import keyword
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

INT_CTYPES = {"int", "unsigned int", "size_t", "long", "unsigned long", "long long", "unsigned long long",
              "unsigned short", "short", "unsigned char", "ssize_t", "int64_t", "uint64_t", "uint32_t", "int32_t"}
FLOAT_CTYPES = {"float", "double"}
SIMPLE_BUILTINS = {"int", "float", "bytes", "str", "bool"}
SECTION = re.compile(r"^[A-Z][a-z]+( [A-Z][a-z]+)?$")


def _is_enum(cls: type) -> bool:
    return isinstance(getattr(cls, "__members__", None), dict) or hasattr(getattr(cls, "__members__", None), "items")


def _annotation(text: str, classes: set[str]) -> str:
    text = text.strip()
    optional = re.fullmatch(r"Optional\[(\w+)\]", text)
    if optional and optional.group(1) in classes:
        return f"{optional.group(1)} | None"
    if text in classes:
        return text
    if text in SIMPLE_BUILTINS:
        return text
    return "Any"


def _param(raw: str, classes: set[str]) -> str | None:
    """``size_t count`` -> ``count: int``; ``kind: cudaMemcpyKind`` -> ``kind: cudaMemcpyKind``."""
    raw = raw.strip()
    if not raw:
        return None
    default = ""
    if "=" in raw:
        raw, _ = raw.split("=", 1)
        default = " = ..."
    declared, _, pytype = raw.partition(":")
    words = declared.replace("*", " ").split()
    if not words:
        return None
    name = words[-1]
    if not name.isidentifier() or keyword.iskeyword(name):
        return None
    ctype = " ".join(words[:-1])
    if pytype:
        annotation = _annotation(pytype, classes)
    elif ctype in INT_CTYPES:
        annotation = "int"
    elif ctype in FLOAT_CTYPES:
        annotation = "float"
    elif ctype in classes:
        annotation = ctype
    else:
        annotation = "Any"
    return f"{name}: {annotation}{default}"


def _split_params(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _returns(doc: str, classes: set[str]) -> str:
    if "Returns\n-------\n" not in doc:
        return "Any"
    section = doc.split("Returns\n-------\n", 1)[1]
    entries: list[str] = []
    for line in section.splitlines():
        if SECTION.match(line) and entries:
            break
        if line and not line.startswith(" "):
            entries.append(line)
    if not entries or not entries[0].startswith("cudaError_t"):
        return "Any"
    values = []
    for entry in entries[1:]:
        match = re.search(r":\s*(?::py:obj:`~?\.?)?([\w ]+)`?\s*$", entry)
        token = match.group(1).strip() if match else ""
        if token in INT_CTYPES:
            values.append("int")
        else:
            values.append(_annotation(token, classes))
    return f"tuple[{', '.join(['cudaError_t', *values])}]"


def _function(name: str, obj: Any, classes: set[str]) -> str:
    doc = inspect.getdoc(obj) or ""
    first = doc.splitlines()[0] if doc else ""
    match = re.fullmatch(rf"{re.escape(name)}\((.*)\)", first.strip())
    if not match:
        return f"def {name}(*args: Any, **kwargs: Any) -> Any: ..."
    params = [_param(p, classes) for p in _split_params(match.group(1))] if match.group(1).strip() else []
    if any(p is None for p in params):
        return f"def {name}(*args: Any, **kwargs: Any) -> Any: ..."
    return f"def {name}({', '.join(p for p in params if p)}) -> {_returns(doc, classes)}: ..."


def _class(name: str, cls: type, classes: set[str]) -> list[str]:
    if _is_enum(cls):
        lines = [f"class {name}(enum.IntEnum):"]
        members = list(getattr(cls, "__members__").items())
        lines += [f"    {member} = {int(value)}" for member, value in members if member.isidentifier()]
        return lines if members else [*lines, "    ..."]
    lines = [f"class {name}:", "    def __init__(self, *args: Any, **kwargs: Any) -> None: ..."]
    for dunder, result in (("__int__", "int"), ("__index__", "int")):
        if hasattr(cls, dunder):
            lines.append(f"    def {dunder}(self) -> {result}: ...")
    for attr, value in sorted(vars(cls).items()):
        if attr.startswith("_") or not attr.isidentifier() or keyword.iskeyword(attr):
            continue
        if inspect.isdatadescriptor(value):
            lines.append(f"    {attr}: Any")
        elif callable(value):
            lines.append(f"    def {attr}(self, *args: Any, **kwargs: Any) -> Any: ...")
        else:
            lines.append(f"    {attr}: Any")
    return lines


def render(module: ModuleType) -> str:
    names = [n for n in dir(module) if not n.startswith("__")]
    classes = {n for n in names if isinstance(getattr(module, n), type) and not n.startswith("_")}
    out = ["# Generated by tools/trt_stubs/cudart_stubgen.py from the installed cuda-python; do not edit.",
           "import enum", "from typing import Any", ""]
    for name in sorted(classes):
        if name == "Any":
            continue
        out += _class(name, getattr(module, name), classes) + [""]
    for name in names:
        obj = getattr(module, name)
        if name.startswith("_") or name in classes or isinstance(obj, ModuleType):
            continue
        if callable(obj):
            out.append(_function(name, obj, classes))
        elif type(obj).__name__ in SIMPLE_BUILTINS and hasattr(builtins, type(obj).__name__):
            out.append(f"{name}: {type(obj).__name__}")
        else:
            out.append(f"{name}: Any")
    return "\n".join(out) + "\n"


def main(out_dir: str) -> None:
    from cuda.bindings import runtime

    root = Path(out_dir) / "cuda"
    (root / "bindings").mkdir(parents=True, exist_ok=True)
    (root / "__init__.pyi").write_text("")
    (root / "bindings" / "__init__.pyi").write_text("__version__: str\n")
    (root / "bindings" / "runtime.pyi").write_text(render(runtime))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
