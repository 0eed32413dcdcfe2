"""Whether an ort session setting changes any output bit (benchmarks/results/serve_memory.md, "Same outputs").

    python benchmarks/serve_memory/same_outputs.py dump BEFORE.npz     # in one checkout
    python benchmarks/serve_memory/same_outputs.py dump AFTER.npz      # in the other
    python benchmarks/serve_memory/same_outputs.py compare BEFORE.npz AFTER.npz

``dump`` runs the bundle on the ort backend over 48 aligned LFW crops (E_F and E_P embeddings and mask
probabilities at batches of 1, 7 and 48; 24 pair scores) and 16 raw LFW photos (the detector's aligned crops at
batches of 1, 5 and 24): several batch shapes, since memory settings act per shape. ``compare`` exits 1 unless
every array is the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def dump(out: Path, bundle: Path, data: Path) -> None:
    from bfm_deploy.verifier import Verifier

    crops = sorted((data / "lfw" / "aligned112").glob("*/*.jpg"))[::97][:48]
    photos = sorted((data / "lfw" / "raw-fold1").glob("*/*.jpg"))[::53][:24]
    arrays: dict[str, np.ndarray] = {}
    with Verifier(bundle, backend="ort", batch_size=64) as verifier:
        for size in (1, 7, 48):
            chunks = [crops[i:i + size] for i in range(0, len(crops), size)]
            for route in ("full", "partial"):
                arrays[f"{route}_{size}"] = np.concatenate([verifier.embed(c, route=route, aligned=True) for c in chunks])
            arrays[f"mask_{size}"] = np.concatenate([verifier.mask_probability(c, aligned=True) for c in chunks])
        faces = [verifier.prepare(c, aligned=True) for c in crops]
        arrays["scores"] = np.array([r.score for r in verifier.score_pairs(list(zip(faces[::2], faces[1::2])))])
        for size in (1, 5, 24):
            found = [f for i in range(0, len(photos), size) for f in verifier.prepare_many(photos[i:i + size])]
            arrays[f"detected_{size}"] = np.stack([getattr(f, "crop", np.zeros((112, 112, 3), np.uint8)) for f in found])
    np.savez(out, **arrays)  # type: ignore[arg-type]
    print(f"{out}: {len(crops)} crops, {len(photos)} photos, {len(arrays)} arrays")


def compare(a: Path, b: Path) -> int:
    left, right = np.load(a), np.load(b)
    differ = [k for k in left.files if k not in right.files or left[k].tobytes() != right[k].tobytes()]
    print(f"{len(left.files) - len(differ)} of {len(left.files)} arrays bit-identical" + (f"; differ: {differ}" if differ else ""))
    return 1 if differ or set(left.files) != set(right.files) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    d = commands.add_parser("dump")
    d.add_argument("out", type=Path)
    d.add_argument("--bundle", type=Path, default=REPO / "engines" / "demo")
    d.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    c = commands.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.out, args.bundle, args.data_dir)
    else:
        sys.exit(compare(args.a, args.b))


if __name__ == "__main__":
    main()
