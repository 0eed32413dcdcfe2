"""``bfm-gallery``: enrol people, identify faces among them (1:N, balanced matching), and manage the gallery.

    bfm-gallery enroll people alice alice1.jpg alice2.jpg     # creates the gallery "people" if needed
    bfm-gallery enroll people --folder lfw_subset/            # one identity per sub-folder
    bfm-gallery identify people probe.jpg --top-k 3
    bfm-gallery list people; bfm-gallery remove people alice
    bfm-gallery export people people.npz; bfm-gallery import other people.npz
    bfm-gallery calibrate people --fpir 0.01                 # open-set thresholds from LFW folds 1-5

``identify`` exits 0 when every probe was identified, 1 when any is unknown, 2 on an error. ``enroll --folder``
exits 1 when it skipped photos (unreadable, or no face found: each is listed) and enrolled the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..cli_options import (backend_option, bundle_option, data_dir_option, detector_option, emit_json, fpir_option,
                           json_option, note, open_set_report_option, quiet_option)
from ..cli_support import OneLineGroup, one_line_errors
from ..errors import BfmError
from ..images import IMAGE_SUFFIXES
from ..progress import progress
from ..verifier import FaceFeatures, Verifier
from .gallery import Gallery

EXIT_ALL_IDENTIFIED, EXIT_SOME_UNKNOWN = 0, 1
EXIT_SOME_SKIPPED = 1  # enroll --folder: the rest was enrolled, the skipped photos are listed

# a folder (the embedded store: SQLite + FAISS) or a PostgreSQL connection string (postgresql://..., pgvector)
gallery_argument = click.argument("gallery", metavar="GALLERY")


def _features(verifier: Verifier, images: list[Path], aligned: bool) -> list[FaceFeatures]:
    faces = []
    for face in verifier.prepare_many(images, aligned):
        if isinstance(face, BfmError):
            raise face  # names the image: nothing of this enrolment is stored
        faces.append(face)
    return verifier.features(faces)


def _repairs(store: Gallery) -> None:
    for line in store.notes:
        note(f"note: {line}")


def _folder_features(verifier: Verifier, store: Gallery, people: list[tuple[str, list[Path]]], aligned: bool,
                     extend: bool) -> tuple[list[tuple[str, list[Path], list[FaceFeatures]]], list[dict[str, str]]]:
    """Every face of a --folder enrolment, prepared before anything is stored: a name already enrolled (without
    --extend) refuses the whole run, while a photo that cannot be read or holds no face is skipped and reported
    (one bad photo among thousands should not stop a bulk enrolment, nor leave it half done)."""
    if not extend:
        clash = sorted({name for name, _ in people} & {name for name, _, _ in store.identities()})
        if clash:
            more = f" and {len(clash) - 1} more" if len(clash) > 1 else ""
            raise BfmError(f"{clash[0]}{more} already enrolled (add faces with --extend, or remove them first); "
                           "nothing enrolled")
    ready: list[tuple[str, list[Path], list[FaceFeatures]]] = []
    skipped: list[dict[str, str]] = []
    with progress(total=sum(len(images) for _, images in people), desc="enroll", unit="image") as bar:
        for name, images in people:  # an identity at a time: only the embeddings of the earlier ones are held
            kept, faces = [], []
            for path, face in zip(images, verifier.prepare_many(images, aligned)):
                if isinstance(face, BfmError):
                    skipped.append({"identity": name, "image": str(path), "error": str(face)})
                else:
                    kept.append(path)
                    faces.append(face)
            if faces:
                ready.append((name, kept, verifier.features(faces)))
            bar.update(len(images))
    return ready, skipped


def _folder_identities(folder: Path) -> list[tuple[str, list[Path]]]:
    if not folder.is_dir():
        raise BfmError(f"--folder {folder}: not a folder")
    people = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        images = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            people.append((sub.name, images))
    if not people:
        raise BfmError(f"--folder {folder}: no sub-folders with images (one sub-folder per identity)")
    return people


SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=OneLineGroup, context_settings=SETTINGS)
def main() -> None:
    """Enrol faces and identify probes among them, a masked face always matched on E_P.

    GALLERY is a folder (the embedded store: SQLite and, for large galleries, FAISS indexes) or a PostgreSQL
    connection string (postgresql://USER@HOST/DB, pgvector) that many replicas share."""


def face_input_options(func: Any) -> Any:
    """What the commands that read faces (enroll, identify) share: --aligned, the bundle, backend and detector,
    --json, --json-out and --quiet, and one-line errors."""
    for decorate in reversed((click.option("--aligned", is_flag=True,
                                           help="The images are aligned 112x112 crops (no detection)."),
                              bundle_option, backend_option(), detector_option, json_option, quiet_option,
                              one_line_errors)):
        func = decorate(func)
    return func


def command(name: str | None = None) -> Any:
    return main.command(name=name, context_settings=SETTINGS)


@command()
@gallery_argument
@click.argument("identity", required=False)
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Enrol every sub-folder of FOLDER as an identity (its name) with its images.")
@click.option("--extend", is_flag=True, help="Add faces to an identity that is already enrolled.")
@face_input_options
def enroll(gallery: str, identity: str | None, images: tuple[Path, ...], folder: Path | None, extend: bool,
           aligned: bool, bundle: Path, backend: str, detector: str, json_out: str | None) -> None:
    """Enrol IDENTITY with its IMAGES (each face keeps both embeddings and its mask state)."""
    if folder is not None:
        if identity is not None or images:
            raise BfmError("give either IDENTITY IMAGES... or --folder, not both")
        people = _folder_identities(folder)
    else:
        if identity is None or not images:
            raise BfmError("enroll needs IDENTITY and at least one image (or --folder DIR)")
        people = [(identity, list(images))]
    enrolled: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with Verifier(bundle, backend=backend, detector=detector) as verifier, \
            Gallery.open(gallery, verifier.bundle, create=True) as store:
        if folder is None:  # named images: any one that fails stops the enrolment before anything is stored
            ready = [(name, paths, _features(verifier, paths, aligned)) for name, paths in people]
        else:
            ready, skipped = _folder_features(verifier, store, people, aligned, extend)
        for name, paths, features in ready:
            ids = store.add(name, features, [p.name for p in paths], extend=extend)
            masked = sum(f.masked for f in features)
            enrolled.append({"identity": name, "face_ids": ids, "masked": masked})
            note(f"enrolled {name}: {len(ids)} face(s), {masked} masked")
        total = len(store)
    for item in skipped:
        note(f"skipped {item['image']}: {item['error']}")
    emit_json(json_out, {"gallery": str(gallery), "enrolled": enrolled, "skipped": skipped, "faces": total})
    if skipped:
        raise SystemExit(EXIT_SOME_SKIPPED)


@command()
@gallery_argument
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Candidates per probe.")
@click.option("--margin", type=float, default=None,
              help="Open-set threshold on the margin over the matched route's verification threshold, for both "
                   "routes; below it: unknown (default: the gallery's calibrated ones, else 0).")
@face_input_options
def identify(gallery: str, images: tuple[Path, ...], top_k: int, margin: float | None, aligned: bool, bundle: Path,
             backend: str, detector: str, json_out: str | None) -> None:
    """Who is in each of IMAGES? The best identity (or unknown) and the top-k candidates."""
    with Verifier(bundle, backend=backend, detector=detector) as verifier, \
            Gallery.open(gallery, verifier.bundle) as store:
        probes = _features(verifier, list(images), aligned)
        results = store.identify_many(probes, top_k=top_k, margin=margin, notes=[p.note for p in probes])
        open_set = store.open_set() if margin is None else {"full": margin, "partial": margin, "fpir": None,
                                                             "calibration": "--margin"}
        if margin is None and open_set["fpir"] is None:
            note("note: this gallery has no open-set thresholds, so 'unknown' starts at the verification thresholds, "
                 "which call most strangers someone in a large gallery: run bfm-gallery calibrate")
        _repairs(store)
    records = []
    for path, result in zip(images, results):
        records.append({"image": str(path), **result.to_dict()})
        if json_out is None:
            best = result.candidates[0] if result.candidates else None
            said = result.identity if result.identity is not None else "unknown"
            detail = f" (best {best.identity}: margin {best.margin:+.4f}, score {best.score:.4f} on {best.route})" if best else " (empty gallery)"
            click.echo(f"{path}: {said}{detail}{', masked' if result.masked else ''}")
    emit_json(json_out, {"gallery": str(gallery), "open_set": open_set, "probes": records})
    raise SystemExit(EXIT_ALL_IDENTIFIED if all(r.identity is not None for r in results) else EXIT_SOME_UNKNOWN)


@command()
@gallery_argument
@click.argument("identity")
@bundle_option
@quiet_option
@one_line_errors
def remove(gallery: str, identity: str, bundle: Path) -> None:
    """Remove every face of IDENTITY."""
    from ..bundle import Bundle

    with Gallery.open(gallery, Bundle.load(bundle)) as store:
        removed = store.remove(identity)
    note(f"removed {identity}: {removed} face(s)")


@command("list")
@gallery_argument
@bundle_option
@json_option
@quiet_option
@one_line_errors
def list_(gallery: str, bundle: Path, json_out: str | None) -> None:
    """The enrolled identities, with their face and masked-face counts."""
    from ..bundle import Bundle

    with Gallery.open(gallery, Bundle.load(bundle)) as store:
        people = store.identities()
        open_set = store.open_set()
        kinds = store.index_kinds()
        _repairs(store)
    if json_out is None:
        for name, faces, masked in people:
            click.echo(f"{name}\t{faces} face(s)\t{masked} masked")
        note(f"open set: margin >= {open_set['full']:+.4f} (E_F), {open_set['partial']:+.4f} (E_P); "
             f"{open_set['calibration']}; search: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))
    emit_json(json_out, {"gallery": str(gallery), "open_set": open_set, "search": kinds, "identities": [
        {"identity": name, "faces": faces, "masked": masked} for name, faces, masked in people]})


@command()
@gallery_argument
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@bundle_option
@quiet_option
@one_line_errors
def export(gallery: str, file: Path, bundle: Path) -> None:
    """Write every face (embeddings, mask states, names) to FILE (.npz)."""
    from ..bundle import Bundle

    if file.suffix != ".npz":
        raise BfmError(f"{file}: an export is a .npz file")
    with Gallery.open(gallery, Bundle.load(bundle)) as store:
        count = store.export(file)
    note(f"wrote {file}: {count} face(s)")


@command("import")
@gallery_argument
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@bundle_option
@quiet_option
@one_line_errors
def import_(gallery: str, file: Path, bundle: Path) -> None:
    """Add the faces of an exported FILE (.npz) to GALLERY (created if needed)."""
    from ..bundle import Bundle

    with Gallery.open(gallery, Bundle.load(bundle), create=True) as store:
        count = store.import_(file)
    note(f"imported {count} face(s) into {gallery}")


@command()
@gallery_argument
@open_set_report_option
@fpir_option
@click.option("--folds", metavar="SPEC", default="1-5", show_default=True,
              help="LFW folds whose identities calibrate (training identities only: folds 6-10 are refused).")
@data_dir_option
@bundle_option
@backend_option()
@json_option
@quiet_option
@one_line_errors
def calibrate(gallery: str, open_set_report: Path | None, fpir: float, folds: str, data_dir: Path, bundle: Path,
              backend: str, json_out: str | None) -> None:
    """Set GALLERY's open-set thresholds (one per route) at a target FPIR, measured on LFW training identities."""
    from ..bundle import Bundle
    from ..eval.identification import open_set_thresholds, read_report

    loaded = Bundle.load(bundle)
    if open_set_report is not None:
        report = read_report(open_set_report)
        if report["bundle"] != loaded.name:
            raise BfmError(f"{open_set_report}: measured with bundle {report['bundle']!r}, not {loaded.name!r}")
    else:
        from ..eval.api import EvalOptions, run_identification

        report = run_identification(EvalOptions(dataset="lfw-identification", bundle=str(bundle), data_dir=data_dir,
                                                folds=folds, backend=backend), target_fpir=fpir)
    thresholds = open_set_thresholds(report)
    with Gallery.open(gallery, loaded) as store:
        store.set_open_set(thresholds["full"], thresholds["partial"], thresholds["fpir"], thresholds["calibration"])
    note(f"{gallery}: unknown below margin {thresholds['full']:+.4f} (E_F) / {thresholds['partial']:+.4f} (E_P); "
         f"{thresholds['calibration']}")
    emit_json(json_out, {"gallery": str(gallery), "open_set": thresholds})
