"""``bfm-verify``: are two faces the same person? Or a whole list of pairs, streamed as JSON lines.

Exit status for one pair: 0 same person, 1 different, 2 error. For ``--pairs``: 0 when every pair was
verified, 2 when any could not be (its JSON line carries the error) or the run failed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO

import click

from .atomic import atomic_write_text
from .cli_options import STDOUT, backend_option, bfm_command, bundle_option, detector_option, emit_json, json_option, quiet_option
from .cli_support import fail, one_line_errors
from .datasets import read_pairs_file
from .errors import BfmError
from .progress import progress
from .verifier import CASE_NAMES, PairError, Verifier, VerifyResult

EXIT_SAME, EXIT_DIFFERENT = 0, 1


def read_pairs(path: Path) -> list[tuple[Path, Path]]:
    """The image pairs of a pairs file (``bfm_deploy.datasets.read_pairs_file``; labels, if any, are ignored)."""
    return [(p.left, p.right) for p in read_pairs_file(path)]


def describe(result: VerifyResult) -> str:
    decision = "same person" if result.same else "different people"
    relation = ">=" if result.same else "<"
    lines = [
        f"{decision} (score {result.score:.4f} {relation} threshold {result.threshold:.4f})",
        f"route: {result.route}, case {result.case} ({CASE_NAMES[result.case]})",
        f"mask probability: {result.mask_probability[0]:.3f}, {result.mask_probability[1]:.3f}",
    ]
    retried = [f"image {i + 1} by {by}" for i, by in enumerate(result.found_by) if by not in ("detector", "aligned")]
    if retried:
        lines.append(f"found on a retry of the detector: {', '.join(retried)}")
    if result.note:
        lines.append(f"note: {result.note}")
    return "\n".join(lines)


def partial_path(out: Path) -> Path:
    """Where ``--pairs --out OUT`` keeps finished lines until the run completes."""
    return out.with_name(out.name + ".partial")


def _finished_records(partial: Path, pairs: list[tuple[Path, Path]]) -> list[dict[str, object]]:
    """The complete lines of an interrupted run, checked to be the first pairs of this pairs file in order; a
    line cut by the interruption (no newline, or not JSON) is dropped and verified again."""
    text = partial.read_text(encoding="utf-8")
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # cut mid-line
    records: list[dict[str, object]] = []
    for line in (line for line in lines if line):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        records.append(record)
    if len(records) > len(pairs):
        raise BfmError(f"{partial} has {len(records)} results but the pairs file lists {len(pairs)}; "
                       "it belongs to another run: delete it")
    for number, (record, (left, right)) in enumerate(zip(records, pairs), start=1):
        if record.get("a") != str(left) or record.get("b") != str(right):
            raise BfmError(f"{partial}: line {number} is for another pair than line {number} of the pairs file; "
                           "it belongs to another run: delete it")
    return records


def _verify_pairs(verifier: Verifier, pairs_file: Path, out: Path | None, aligned: bool, resume: bool) -> int:
    """Stream one JSON line per pair. With ``out``, finished lines go to ``OUT.partial`` as they come (an
    interruption keeps them), and the complete file is renamed to ``OUT`` at the end; ``resume`` continues an
    interrupted run from its partial file."""
    pairs = read_pairs(pairs_file)
    done: list[dict[str, object]] = []
    partial = partial_path(out) if out is not None else None
    if partial is not None and partial.exists():
        if not resume:
            raise BfmError(f"{partial} holds the results of an interrupted run: pass --resume to continue it, "
                           "or delete it")
        done = _finished_records(partial, pairs)
    failed = sum("error" in record for record in done)
    todo = pairs[len(done):]
    sink: IO[str] = sys.stdout
    if partial is not None:
        if done:  # rewrite the good lines: a line cut by the interruption is dropped, not appended to
            atomic_write_text(partial, "".join(json.dumps(record) + "\n" for record in done))
        sink = open(partial, "a" if done else "w", encoding="utf-8")
    try:
        with progress(total=len(pairs), initial=len(done), desc="verify", unit="pair") as bar:
            results = verifier.verify_many(todo, aligned=aligned, errors="collect")
            for (left, right), result in zip(todo, results):
                record: dict[str, object] = {"a": str(left), "b": str(right)}
                if isinstance(result, PairError):
                    failed += 1
                    record["error"] = result.message
                else:
                    record.update(result.to_dict())
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                bar.update(1)
    finally:
        if partial is not None:
            sink.close()
    if out is not None and partial is not None:
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, out)
    if failed:
        fail(f"{failed} of {len(pairs)} pairs could not be verified (see the 'error' field of their lines)")
    return 0


@bfm_command()
@click.argument("images", nargs=-1, metavar="[IMG1 IMG2]", type=click.Path(path_type=Path))
@bundle_option
@backend_option()
@click.option("--aligned", is_flag=True, help="Inputs are 112x112 ArcFace-aligned crops: skip face detection.")
@json_option
@click.option("--pairs", "pairs_file", type=click.Path(path_type=Path),
              help="Verify every 'img1 img2' line (or TSV) of this file, paths relative to it; "
                   "one JSON line per pair; exit 0 when all pairs were verified, else 2.")
@click.option("--out", type=click.Path(path_type=Path),
              help="With --pairs: write the JSON lines here; finished lines are kept in OUT.partial until the run "
                   "completes.")
@click.option("--resume", is_flag=True,
              help="With --pairs --out: continue an interrupted run from OUT.partial (a fresh run if there is none).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Largest batch per network.")
@detector_option
@quiet_option
@one_line_errors
def main(images: tuple[Path, ...], bundle: Path, backend: str, aligned: bool, json_out: str | None,
         pairs_file: Path | None, out: Path | None, resume: bool, batch_size: int, detector: str) -> None:
    """Verify that IMG1 and IMG2 show the same person (exit 0) or different people (exit 1); 2 on error.

    Faces are detected (the bundle's detector, see --detector) and aligned unless --aligned; the mask classifier routes the pair to the
    full-face (case 1) or partial-face extractor (cases 2 and 3) and its threshold.
    """
    if pairs_file is not None and images:
        raise BfmError("give either IMG1 IMG2 or --pairs FILE, not both")
    if pairs_file is None and len(images) != 2:
        raise BfmError(f"expected two images (IMG1 IMG2) or --pairs FILE, got {len(images)} image(s)")
    if out is not None and pairs_file is None:
        raise BfmError("--out is only for --pairs")
    if resume and (pairs_file is None or out is None):
        raise BfmError("--resume continues a --pairs FILE --out OUT run")
    if json_out is not None and pairs_file is not None:
        raise BfmError("--pairs writes one JSON line per pair already (to stdout, or to --out FILE); drop --json")
    with Verifier(bundle, backend=backend, batch_size=batch_size, detector=detector) as verifier:
        if pairs_file is not None:
            sys.exit(_verify_pairs(verifier, pairs_file, out, aligned, resume))
        result = verifier.verify(images[0], images[1], aligned=aligned)
        ran_on = verifier.backend.describe()  # which backend auto chose, and its precision
    if json_out is not None:
        emit_json(json_out, {"a": str(images[0]), "b": str(images[1]), **result.to_dict(), "backend": ran_on})
    if json_out is None or json_out != STDOUT:
        click.echo(describe(result))
    sys.exit(EXIT_SAME if result.same else EXIT_DIFFERENT)


if __name__ == "__main__":
    main()
