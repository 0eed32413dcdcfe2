"""Figures of every tool (matplotlib's Agg backend: no display needed), written as small palette PNGs."""

from __future__ import annotations

import io
import os
from typing import Any

from .atomic import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (chosen before pyplot loads: plots are drawn on headless machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> None:
    """Lay out ``fig``, write it to ``path`` atomically (110 dpi, the project's plots, unless ``dpi``) and close it.

    The PNG is stored with a 64-colour palette: line plots use a few dozen colours (anti-aliased edges take the
    nearest), and such a PNG is a quarter the size of matplotlib's RGBA one. The size matters because result plots are committed, and the whole
    tracked tree travels to the GPU machine under a 64 MiB limit."""
    from PIL import Image  # matplotlib's own dependency

    try:
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        buffer.seek(0)
        with Image.open(buffer) as image:
            palette = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
        with atomic_path(path) as tmp:
            palette.save(tmp, format="PNG", optimize=True)
    finally:
        pyplot().close(fig)
