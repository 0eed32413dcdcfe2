"""The bfm demo bundle, installed as a package: ``BUNDLE`` is its folder (what ``--bundle`` would name)."""

from pathlib import Path

BUNDLE = Path(__file__).resolve().parent / "bundle"
