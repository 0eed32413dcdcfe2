"""The console scripts of the training side: each checks the training extras before importing the tool, so
that ``bfm-train --help`` without them is one ``error:`` line naming the pip command, not a traceback."""

from __future__ import annotations

import importlib
from typing import Any

from bfm_deploy.cli_support import fail
from bfm_deploy.optional import install_hint

TRAIN_EXTRAS = ("torch", "onnx", "safetensors", "yaml")
MODULES = {"bfm-train": "bfm_train.train.cli", "bfm-export": "bfm_train.export.cli"}  # each with its click main


def _require_training_extras(tool: str) -> None:
    missing = []
    for module in TRAIN_EXTRAS:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        fail(f"{tool} needs the training extras ({', '.join(missing)} missing): {install_hint('train')}")


def _run(tool: str) -> Any:
    _require_training_extras(tool)
    return importlib.import_module(MODULES[tool]).main()


def train() -> Any:
    return _run("bfm-train")


def export() -> Any:
    return _run("bfm-export")
