"""``bfm-bench --gallery-scale``: the embedded gallery at scale, on synthetic templates.

For each size N: N faces (N/2 identities of two faces; 30% masked, as if enrolled with masks), each with an E_F
and an E_P embedding drawn around the identity's own random centre. Face embeddings are not uniform on the
sphere: the centres are Gaussian with a variance spectrum decaying as i^-alpha (E_F alpha 0.6, E_P 0.68:
participation ratios 194 and 131, near the 178 and 132 measured on the demo bundle's E_F and E_P embeddings of
800 LFW training-fold faces), and a face is its centre plus isotropic noise (two faces of one identity: cosine
~0.5, as LFW's genuine pairs; impostors ~0). Measured:

- **enrol**: bulk load (``Gallery.import_``'s path: one transaction per 10k faces) in faces/s, and single
  enrolments (``Gallery.add``, one durable transaction each, the way ``bfm-gallery enroll`` and the server add a
  person) in ms, into the gallery already holding N faces;
- **search**: ``Gallery.identify`` per probe (top-10) with exact search and with the IVF index, median and p90;
  probes are fresh noisy views of enrolled identities, half of them masked (so both routes are searched);
- **recall@1 / recall@10** of the IVF index: of exact search's top-1 / top-10 identities, the share it returns;
- **memory per template**: the database on disk, the exact structures in memory and the IVF indexes (their
  serialised size), divided by N; and the IVF build time (training + adding every template).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import Bundle
from ..progress import progress
from ..verifier import l2_normalise
from .stats import median, percentile

MASKED_SHARE = 0.3
NOISE = 0.045  # per-dimension noise on a unit centre (normalised after): two faces of one identity at cosine ~0.5
SPECTRUM = {"full": 0.6, "partial": 0.68}  # variance of principal axis i ~ i^-alpha


@dataclass(frozen=True)
class GalleryBenchOptions:
    bundle: Path
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    queries: int = 300  # probes per size (at 1M: a third of it)
    single_enrolments: int = 100
    seed: int = 0


class Synthetic:
    """Identity centres, drawn lazily per chunk from a seeded generator (the same faces every run)."""

    def __init__(self, people: int, size: int, seed: int) -> None:
        self.people, self.size, self.seed = people, size, seed

    def centres(self, start: int, stop: int, route: str) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0 if route == "full" else 1, start])
        scale = np.arange(1, self.size + 1, dtype=np.float32) ** (-SPECTRUM[route] / 2)
        return l2_normalise(rng.standard_normal((stop - start, self.size)).astype(np.float32) * scale)

    def views(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return l2_normalise(centres + NOISE * rng.standard_normal(centres.shape).astype(np.float32))


CHUNK = 5000  # identities drawn together (their centres depend on the chunk's first index)


def _load(gallery: Any, data: Synthetic, chunk: int = CHUNK) -> float:
    """Bulk-enrol every synthetic face; returns faces per second."""
    start = time.perf_counter()
    for first in progress(range(0, data.people, chunk), desc="enrolling", unit="chunk"):
        last = min(first + chunk, data.people)
        rng = np.random.default_rng([data.seed, 2, first])
        full_c, part_c = data.centres(first, last, "full"), data.centres(first, last, "partial")
        rows = []
        for _face in range(2):
            full, partial = data.views(full_c, rng), data.views(part_c, rng)
            masked = rng.random(last - first) < MASKED_SHARE
            rows += [(f"id{first + i:07d}", "", 0.9 if masked[i] else 0.1, bool(masked[i]), full[i], partial[i])
                     for i in range(last - first)]
        gallery.store.add(rows)
    return 2 * data.people / (time.perf_counter() - start)


def _probes(data: Synthetic, count: int, seed: int) -> tuple[list[Any], list[str]]:
    from ..verifier import FaceFeatures

    rng = np.random.default_rng([seed, 3])
    who = np.sort(rng.choice(data.people, count, replace=False))
    probes, names = [], []
    for i, person in enumerate(who.tolist()):
        first = person // CHUNK * CHUNK
        last = min(first + CHUNK, data.people)
        full = data.views(data.centres(first, last, "full")[person - first : person - first + 1], rng)[0]
        partial = data.views(data.centres(first, last, "partial")[person - first : person - first + 1], rng)[0]
        masked = i % 2 == 1
        probes.append(FaceFeatures(0.9 if masked else 0.1, masked, full, partial))
        names.append(f"id{person:07d}")
    return probes, names


def _search(gallery: Any, probes: list[Any]) -> tuple[list[list[str]], np.ndarray]:
    gallery.identify(probes[0], top_k=10)  # builds or loads the structures: timed apart
    ranked, times = [], []
    for probe in probes:
        start = time.perf_counter()
        result = gallery.identify(probe, top_k=10, margin=-10.0)
        times.append(time.perf_counter() - start)
        ranked.append([c.identity for c in result.candidates])
    return ranked, np.array(times) * 1000


def _structure_bytes(gallery: Any) -> int:
    from ..gallery.index import ExactIndex, IvfIndex

    total = 0
    for structure in gallery._sync().values():
        if isinstance(structure, ExactIndex):
            ids, vectors = structure.vectors()
            total += ids.nbytes + vectors.nbytes
        elif isinstance(structure, IvfIndex):
            import faiss

            total += int(faiss.serialize_index(structure.index).nbytes)  # type: ignore[arg-type]
    return total


def run_gallery_bench(options: GalleryBenchOptions) -> dict[str, Any]:
    from ..gallery import Gallery

    bundle = Bundle.load(options.bundle)
    results = []
    for n in options.sizes:
        data = Synthetic(max(1, n // 2), bundle.embedding_size, options.seed)
        queries = max(10, options.queries // 3 if n >= 1_000_000 else options.queries)
        probes, truth = _probes(data, min(queries, data.people), options.seed)
        with tempfile.TemporaryDirectory(prefix="bfm-gallery-bench-") as tmp:
            folder = Path(tmp) / "g"
            gallery = Gallery.open(folder, bundle, create=True, exact_limit=2**62)
            bulk = _load(gallery, data)
            start = time.perf_counter()
            exact_ranked, exact_ms = _search(gallery, probes)
            exact_load = time.perf_counter() - start - exact_ms.sum() / 1000
            exact_bytes = _structure_bytes(gallery)
            single = []
            rng = np.random.default_rng([options.seed, 4])
            for i in range(options.single_enrolments):
                probe = probes[i % len(probes)]
                start = time.perf_counter()
                gallery.add(f"new{i:05d}", [probe.__class__(probe.mask_probability, probe.masked,
                                                             data.views(probe.full[None], rng)[0],
                                                             data.views(probe.partial[None], rng)[0])])
                single.append(time.perf_counter() - start)
            for i in range(options.single_enrolments):
                gallery.store.remove_identity(f"new{i:05d}")
            gallery.reset_search(exact_limit=0)  # drop the exact structures; build the approximate ones
            start = time.perf_counter()
            kinds = gallery.index_kinds()
            build = time.perf_counter() - start
            ivf_ranked, ivf_ms = _search(gallery, probes)
            ivf_bytes = _structure_bytes(gallery)
            gallery.reset_search()  # nothing to save: the folder is thrown away
            gallery.close()
            disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        recall1 = float(np.mean([bool(a) and bool(e) and a[0] == e[0] for a, e in zip(ivf_ranked, exact_ranked)]))
        recall10 = float(np.mean([len(set(a) & set(e)) / max(1, len(e)) for a, e in zip(ivf_ranked, exact_ranked)]))
        rank1 = float(np.mean([bool(e) and e[0] == t for e, t in zip(exact_ranked, truth)]))
        ivf_rank1 = float(np.mean([bool(a) and a[0] == t for a, t in zip(ivf_ranked, truth)]))
        results.append({
            "templates": 2 * data.people, "identities": data.people, "probes": len(probes),
            "bulk_enrol_faces_per_s": round(bulk, 1),
            "single_enrol_ms": _stats(np.array(single) * 1000),
            "exact": {"load_s": round(exact_load, 2), "search_ms": _stats(exact_ms), "rank1": rank1},
            "ivf": {"build_s": round(build, 2), "kinds": kinds, "search_ms": _stats(ivf_ms),
                    "recall_at_1": recall1, "recall_at_10": recall10, "rank1": ivf_rank1},
            "bytes_per_template": {"database_on_disk": round(disk / (2 * data.people), 1),
                                   "exact_in_memory": round(exact_bytes / (2 * data.people), 1),
                                   "ivf_index": round(ivf_bytes / (2 * data.people), 1)},
        })
    import faiss

    from .machine import describe_machine

    return {"bench": "gallery", "bundle": bundle.name, "embedding_size": bundle.embedding_size,
            "masked_share": MASKED_SHARE, "noise": NOISE, "spectrum_alpha": SPECTRUM,
            "nprobe": "max(32, nlist // 16)", "faiss": faiss.__version__, "machine": describe_machine(),
            "sizes": results}


def _stats(ms: np.ndarray) -> dict[str, float]:
    values = ms.tolist()
    return {"median": round(median(values), 3), "p90": round(percentile(values, 90), 3)}


def format_gallery_table(report: dict[str, Any]) -> str:
    lines = ["| templates | bulk enrol (faces/s) | one enrolment (ms) | exact search (ms, p50/p90) | IVF search (ms) | "
             "IVF recall@1 / @10 | rank-1 exact / IVF | IVF build (s) | bytes/template: disk / exact RAM / IVF |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["sizes"]:
        b = r["bytes_per_template"]
        lines.append(f"| {r['templates']:,} | {r['bulk_enrol_faces_per_s']:,.0f} | {r['single_enrol_ms']['median']:.2f} | "
                     f"{r['exact']['search_ms']['median']:.2f} / {r['exact']['search_ms']['p90']:.2f} | "
                     f"{r['ivf']['search_ms']['median']:.2f} / {r['ivf']['search_ms']['p90']:.2f} | "
                     f"{r['ivf']['recall_at_1']:.3f} / {r['ivf']['recall_at_10']:.3f} | "
                     f"{r['exact']['rank1']:.3f} / {r['ivf']['rank1']:.3f} | {r['ivf']['build_s']:.1f} | "
                     f"{b['database_on_disk']:,.0f} / {b['exact_in_memory']:,.0f} / {b['ivf_index']:,.0f} |")
    return "\n".join(lines)


def plot_gallery(report: dict[str, Any], path: Path) -> None:
    from ..plotting import pyplot, save_png

    plt = pyplot()

    sizes = [r["templates"] for r in report["sizes"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("exact", "exact"), ("ivf", "IVF")):
        left.plot(sizes, [r[key]["search_ms"]["median"] for r in report["sizes"]], "o-", label=f"{label} (median)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("templates")
    left.set_ylabel("identify, ms per probe")
    left.legend()
    left.grid(True, which="both", alpha=0.3)
    right.plot(sizes, [r["ivf"]["recall_at_1"] for r in report["sizes"]], "o-", label="recall@1")
    right.plot(sizes, [r["ivf"]["recall_at_10"] for r in report["sizes"]], "s-", label="recall@10")
    right.set_xscale("log")
    right.set_xlabel("templates")
    right.set_ylabel("IVF recall vs exact")
    right.legend()
    right.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"bfm gallery on synthetic templates ({report['machine'].get('cpus_usable', '?')} CPUs)")
    save_png(fig, path)
