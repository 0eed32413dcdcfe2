"""Contact sheet of originals next to their masked versions, to eyeball a masking run."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bfm_deploy.contract import CROP_SIZE
from bfm_deploy.atomic import atomic_write_bytes
from bfm_deploy.errors import BfmError
from bfm_deploy.images import load_image

TILE = CROP_SIZE  # one aligned crop per tile
CAPTION = 14
COLUMNS = 4  # pairs per row
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg")


def check_preview_path(out: Path) -> None:
    """Refuse an unsupported preview format before a long run, not after it."""
    if out.suffix.lower() not in PREVIEW_SUFFIXES:
        raise BfmError(f"preview {out} must end in {', '.join(PREVIEW_SUFFIXES)}")


def _tile(image: np.ndarray) -> np.ndarray:
    """Fit ``image`` into a TILE x TILE square (letterboxed in black)."""
    height, width = image.shape[:2]
    scale = TILE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((TILE, TILE, 3), dtype=np.uint8)
    y, x = (TILE - size[1]) // 2, (TILE - size[0]) // 2
    out[y : y + size[1], x : x + size[0]] = resized
    return out


def contact_sheet(pairs: list[tuple[np.ndarray, np.ndarray, str]]) -> np.ndarray:
    """Grid of (original | masked) cells with a caption under each, ``COLUMNS`` cells per row."""
    if not pairs:
        raise BfmError("nothing to preview: no masked images")
    cells = []
    for original, masked, caption in pairs:
        cell = np.full((TILE + CAPTION, 2 * TILE, 3), 24, dtype=np.uint8)
        cell[:TILE, :TILE] = _tile(original)
        cell[:TILE, TILE:] = _tile(masked)
        cv2.putText(cell, caption[:36], (3, TILE + 10), cv2.FONT_HERSHEY_PLAIN, 0.7, (230, 230, 230), 1, cv2.LINE_AA)
        cells.append(cell)
    blank = np.zeros_like(cells[0])
    while len(cells) % COLUMNS and len(cells) > COLUMNS:
        cells.append(blank)
    columns = min(COLUMNS, len(cells))
    rows = [np.hstack(cells[i : i + columns]) for i in range(0, len(cells), columns)]
    return np.vstack(rows)


def write_preview(
    src: Path, dst: Path, rels: list[str], records: dict[str, dict[str, str]], out: Path, count: int
) -> int:
    """Sheet of ``count`` masked images spread evenly over ``rels``, written atomically to ``out`` (its suffix
    picks the format). Returns the number of pairs shown."""
    check_preview_path(out)
    masked = [rel for rel in rels if (dst / rel).is_file()]
    picks = sorted({int(i) for i in np.linspace(0, len(masked) - 1, min(count, len(masked)))}) if masked else []
    pairs = []
    for index in picks:
        rel = masked[index]
        record = records.get(rel, {})
        caption = f"{record.get('style', '?')} {record.get('side', '')}".strip()
        pairs.append((load_image(src / rel), load_image(dst / rel), caption))
    sheet = contact_sheet(pairs)
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if out.suffix.lower() != ".png" else []
    ok, encoded = cv2.imencode(out.suffix.lower(), sheet, params)
    if not ok:
        raise BfmError(f"cannot encode the preview {out}")
    atomic_write_bytes(out, encoded.tobytes())
    return len(pairs)
