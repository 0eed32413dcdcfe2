"""Mask a whole identity-folder data set (SRC/<identity>/<image>) into its masked twin, resumably.

Each output is written to a temporary file and renamed, so an interrupted run leaves only whole images; a
rerun skips outputs that exist. The report (DST/mask_report.json) is rewritten every few seconds and when the
run ends (also on Ctrl-C), and carries the per-image records over from the run before.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from bfm_deploy.atomic import atomic_write_bytes, atomic_write_text
from bfm_deploy.errors import BfmError
from bfm_deploy.images import IMAGE_SUFFIXES, load_image
from bfm_deploy.progress import progress

from .landmarks import NoFaceError
from .masker import MaskConfig, Masker

REPORT_NAME = "mask_report.json"
REPORT_FORMAT = "bfm-mask-report/1"
# Bump when a change to the masking code changes pixels: a resumed run must not mix two versions.
ALGORITHM_VERSION = 1
JPEG_QUALITY = 95


@dataclass(frozen=True)
class RunConfig:
    src: Path
    dst: Path
    mask: MaskConfig
    aligned: bool | None = None  # None: decide per image (a 112x112 image is an aligned crop)
    workers: int = 1
    limit: int | None = None  # only the first N images (sorted): a quick look at the settings; a rerun without it goes on
    report_every_s: float = 5.0
    progress: bool = True


def list_images(src: Path) -> list[str]:
    """Relative paths ``identity/file`` of every image one folder down, sorted."""
    if not src.is_dir():
        raise BfmError(f"source folder not found: {src}")
    rels = [
        f"{identity.name}/{image.name}"
        for identity in sorted(p for p in src.iterdir() if p.is_dir())
        for image in sorted(identity.iterdir())
        if image.is_file() and image.suffix.lower() in IMAGE_SUFFIXES and not image.name.startswith(".")
    ]
    if not rels:
        raise BfmError(f"no images found as {src}/<identity>/<image> ({', '.join(IMAGE_SUFFIXES)})")
    return rels


def settings_of(cfg: RunConfig) -> dict[str, Any]:
    """Everything that decides the pixels; a resumed run must match the run that started DST."""
    return {
        "algorithm": ALGORITHM_VERSION,
        "types": list(cfg.mask.types),
        "seed": cfg.mask.seed,
        "aligned": "auto" if cfg.aligned is None else cfg.aligned,
        "templates": str(Path(cfg.mask.template_dir).resolve()) if cfg.mask.template_dir else None,
        "template_share": cfg.mask.template_share if cfg.mask.template_dir else None,
        "straps": cfg.mask.straps,
        "fabrics": str(Path(cfg.mask.fabric_dir).resolve()) if cfg.mask.fabric_dir else None,
        "fabric_share": cfg.mask.fabric_share if cfg.mask.fabric_dir else None,
        "print_share": cfg.mask.print_share,
        "low_share": cfg.mask.low_share,
    }


class MaskJob:
    """Masks one image from SRC into DST; one per worker process."""

    def __init__(self, src: Path, dst: Path, mask: MaskConfig, aligned: bool | None) -> None:
        self.src, self.dst, self.aligned = src, dst, aligned
        self.masker = Masker(mask)

    def __call__(self, rel: str) -> dict[str, Any]:
        try:
            image = load_image(self.src / rel)
            result = self.masker.apply(image, aligned=self.aligned, rel_key=rel)
            suffix = Path(rel).suffix.lower()
            params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix in (".jpg", ".jpeg") else []
            ok, encoded = cv2.imencode(suffix, result.image, params)
            if not ok:
                raise BfmError(f"cannot encode {suffix} image")
            atomic_write_bytes(self.dst / rel, encoded.tobytes())
        except NoFaceError:
            return {"path": rel, "status": "no_face"}
        except (BfmError, OSError, cv2.error) as exc:
            # One bad file must not stop a 13,000-image run: it is reported and retried by the next run.
            return {"path": rel, "status": "error", "error": " ".join(f"{type(exc).__name__}: {exc}".split())}
        return {
            "path": rel,
            "status": "ok",
            "type": result.mask_type,
            "side": result.side,
            "source": result.source,
            "style": result.style,
        }


# Pool workers reach their job through this per-process slot, set by the pool initializer: a Pool can only
# call module-level functions, and the job holds dlib models that must be built inside each process.
_WORKER_JOB: MaskJob | None = None


def _init_worker(src: Path, dst: Path, mask: MaskConfig, aligned: bool | None) -> None:
    global _WORKER_JOB
    # Ctrl-C is the parent's to handle (it writes the report and stops the pool); workers would only print
    # a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_JOB = MaskJob(src, dst, mask, aligned)


def _run_in_worker(rel: str) -> dict[str, Any]:
    assert _WORKER_JOB is not None, "worker used before its initializer ran"
    return _WORKER_JOB(rel)


def run(cfg: RunConfig) -> dict[str, Any]:
    """Mask SRC into DST; returns the report (also written to DST/mask_report.json)."""
    src, dst = Path(cfg.src), Path(cfg.dst)
    if src.resolve() == dst.resolve() or src.resolve() in dst.resolve().parents:
        raise BfmError(f"destination {dst} must not be the source folder or inside it")
    rels = list_images(src)[: cfg.limit]
    settings = settings_of(cfg)
    previous = _read_previous_report(dst / REPORT_NAME, settings)
    Masker(cfg.mask)  # check the configuration (types, templates) here, not in every worker
    dst.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(dst)

    done = {rel for rel in rels if (dst / rel).is_file()}
    old_records = previous.get("images", {})
    records: dict[str, dict[str, str]] = {rel: old_records[rel] for rel in done if rel in old_records}
    known = set(rels)
    no_face = {rel for rel in previous.get("no_face", []) if rel in known and rel not in done}
    todo = [rel for rel in rels if rel not in done and rel not in no_face]
    errors: list[dict[str, str]] = []
    state = _RunState(src, dst, settings, rels, records, no_face, errors, len(rels) - len(todo), cfg.workers)

    bar = progress(total=len(todo), unit="img", desc="masking", enabled=cfg.progress and bool(todo), smoothing=0.05)
    last_write = time.monotonic()
    finished = False
    outcomes = _outcomes(cfg, todo)
    try:
        for outcome in outcomes:
            state.add(outcome)
            bar.update(1)
            if time.monotonic() - last_write >= cfg.report_every_s:
                state.write(finished=False)
                last_write = time.monotonic()
        finished = True
    finally:
        outcomes.close()  # stops the pool now, also when interrupted
        bar.close()
        # Also on Ctrl-C: the records of the images done so far are what lets a rerun report full counts.
        state.write(finished)
    return state.report(finished)


def _outcomes(cfg: RunConfig, todo: list[str]) -> Generator[dict[str, Any], None, None]:
    if not todo:
        return
    if cfg.workers <= 1:
        job = MaskJob(cfg.src, cfg.dst, cfg.mask, cfg.aligned)
        for rel in todo:
            yield job(rel)
        return
    # Small chunks keep the progress bar and the periodic report current; larger ones save little here.
    chunk = max(1, min(16, len(todo) // (cfg.workers * 8) or 1))
    with multiprocessing.Pool(
        cfg.workers, initializer=_init_worker, initargs=(cfg.src, cfg.dst, cfg.mask, cfg.aligned)
    ) as pool:
        yield from pool.imap_unordered(_run_in_worker, todo, chunksize=chunk)


class _RunState:
    def __init__(
        self,
        src: Path,
        dst: Path,
        settings: dict[str, Any],
        rels: list[str],
        records: dict[str, dict[str, str]],
        no_face: set[str],
        errors: list[dict[str, str]],
        skipped: int,
        workers: int,
    ) -> None:
        self.src, self.dst, self.settings, self.rels = src, dst, settings, rels
        self.records, self.no_face, self.errors = records, no_face, errors
        self.skipped, self.workers = skipped, workers
        self.processed = 0
        self.started = time.monotonic()

    def add(self, outcome: dict[str, Any]) -> None:
        self.processed += 1
        rel = outcome["path"]
        if outcome["status"] == "ok":
            self.records[rel] = {k: outcome[k] for k in ("type", "side", "source", "style")}
        elif outcome["status"] == "no_face":
            self.no_face.add(rel)
        else:
            self.errors.append({"path": rel, "error": outcome["error"]})

    def report(self, finished: bool) -> dict[str, Any]:
        """``finished``: this run got through its list; ``complete``: and every image is masked or has no face."""
        elapsed = time.monotonic() - self.started
        masked_files = {rel for rel in self.rels if rel in self.records or (self.dst / rel).is_file()}
        unrecorded = sorted(masked_files - set(self.records))
        return {
            "format": REPORT_FORMAT,
            "source": str(self.src),
            "destination": str(self.dst),
            "settings": self.settings,
            "finished": finished,
            "complete": finished and not self.errors,
            "total_images": len(self.rels),
            "masked": len(masked_files),
            "counts": dict(sorted(Counter(r["type"] for r in self.records.values()).items())),
            "sides": dict(sorted(Counter(r["side"] for r in self.records.values()).items())),
            "sources": dict(sorted(Counter(r["source"] for r in self.records.values()).items())),
            "no_face": sorted(self.no_face),
            "errors": self.errors,
            # Outputs from a run killed before it could record them: their mask type is unknown.
            "unrecorded": unrecorded,
            "this_run": {
                "processed": self.processed,
                "skipped_done": self.skipped,
                "workers": self.workers,
                "elapsed_s": round(elapsed, 2),
                "images_per_s": round(self.processed / elapsed, 2) if elapsed > 0 else None,
            },
            "images": dict(sorted(self.records.items())),
        }

    def write(self, finished: bool) -> None:
        atomic_write_text(self.dst / REPORT_NAME, json.dumps(self.report(finished), indent=1) + "\n")


def _read_previous_report(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BfmError(f"cannot read the previous report {path} ({exc}); delete it to start over") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise BfmError(f"{path} is not a bfm-mask report; delete it or choose another destination")
    if report.get("settings") != settings:
        old = report.get("settings") or {}
        differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise BfmError(
            f"{path.parent} was masked with other settings ({', '.join(differ)} differ); "
            "use another destination or the same settings"
        )
    return report


def _remove_stale_temporaries(dst: Path) -> None:
    """Temporary files of a killed run (``.<name>.<random>.tmp``, see bfm_deploy.atomic)."""
    for stale in dst.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    for identity in dst.iterdir():
        if identity.is_dir():
            for stale in identity.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
