"""Search at scale: exact top-k over 10^6 codes, ours against faiss's IndexBinaryFlat in the same run,
plus the approximate mode (faiss IndexBinaryIVF) with its recall@k against exact search, and with --milvus
the same codes on Milvus (BIN_FLAT, BIN_IVF_FLAT), as `index.backend: milvus` puts them there.

python bench/search.py --out bench/results/search_cpu.json           (10^6 64-bit codes, top-100)
python bench/search.py --milvus --out bench/results/search_milvus_cpu.json   (and Milvus: an embedded server)
python bench/search.py --n 20000 --queries 50 --out /tmp/s.json      (a quick check)

Codes are synthetic but shaped like learned ones: clustered around class centres (each bit of a code
differs from its centre with probability --flip), since a uniform random code set is no retrieval
workload. Queries come from the same distribution and are not in the database. recall@k counts a result
at the k-th exact distance as found (ties there are interchangeable). Milvus runs in the embedded server
of the pip package `milvus` on this machine unless --milvus-uri names one; its times include the
client's (pymilvus) request and response handling, since that is what a search through it costs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from dsah.search.index import HammingIndex, approximate_search, build_ivf, write_index  # noqa: E402
from dsah.codes import pack_words  # noqa: E402


def clustered_codes(n: int, bits: int, centres: int, flip: float, rng: np.random.Generator) -> np.ndarray:
    centre = np.where(rng.random((centres, bits)) < 0.5, -1, 1).astype(np.int8)
    chosen = centre[rng.integers(0, centres, n)]
    return np.where(rng.random((n, bits)) < flip, -chosen, chosen).astype(np.int8)


def timed(function, repeats: int = 3):
    """Best of `repeats` wall times (the first call also compiles: it is a warm-up)."""
    function()
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def recall(exact_distances: np.ndarray, found_distances: list[list[int]], k: int) -> float:
    """Share of the exact top k found, a result at the k-th exact distance counting as found."""
    kth = exact_distances[:, -1]
    return float(np.mean([min(sum(d <= kth[a] for d in found), k) for a, found in enumerate(found_distances)]) / k)


@contextlib.contextmanager
def milvus_server(uri: str, base: Path):
    """`uri`, or an embedded Milvus server (the pip package `milvus`) on a free port under `base`."""
    if uri:
        yield uri
        return
    from dsah.search.milvus import embedded_server

    with embedded_server(base) as started:
        yield started


def milvus_runs(index: HammingIndex, queries: np.ndarray, distances: np.ndarray, args, base: Path) -> dict:
    """The index's codes published to Milvus as the index stage does, each kind in turn, then timed."""
    from dsah.search import milvus

    runs = []
    with milvus_server(args.milvus_uri, base) as uri:
        client = milvus.connect(uri)
        data = [code.tobytes() for code in milvus.packed(queries)]
        for kind in ("BIN_FLAT", "BIN_IVF_FLAT"):
            start = time.perf_counter()
            manifest = milvus.publish(index, milvus.MilvusSettings(uri, "bench", kind, args.nlist), "bench")
            build = time.perf_counter() - start
            for nprobe in [None] if kind == "BIN_FLAT" else args.nprobe:
                params = {"metric_type": "HAMMING", **({"params": {"nprobe": nprobe}} if nprobe else {})}
                seconds, found = timed(lambda: client.search(manifest["alias"], data=data, anns_field="code",
                                                             limit=args.k, search_params=params))
                runs.append({"index": kind, "nlist": args.nlist if nprobe else None, "nprobe": nprobe,
                             "build_seconds": build, "queries_per_second": len(queries) / seconds,
                             f"recall@{args.k}": recall(distances, [[h["distance"] for h in hits] for hits in found],
                                                        args.k)})
                print(runs[-1], flush=True)
    import pymilvus

    return {"server": args.milvus_uri or "embedded (pip milvus 2.3.5, this machine)",
            "pymilvus": pymilvus.__version__, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--centres", type=int, default=100)
    parser.add_argument("--flip", type=float, default=0.15)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--milvus", action="store_true", help="also search the codes on Milvus")
    parser.add_argument("--milvus-uri", default="", help="a Milvus server (default: start an embedded one)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import faiss

    rng = np.random.default_rng(0)
    codes = clustered_codes(args.n + args.queries, args.bits, args.centres, args.flip, rng)
    db, queries = codes[:args.n], codes[args.n:]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_index(Path(tmp) / "index", db, (f"{i}" for i in range(args.n)), np.zeros((args.n, 1), np.uint8),
                    ("" for _ in range(args.n)), {"bits": args.bits, "classes": ["x"]})
        build_seconds = time.perf_counter() - start
        files = {p.name: p.stat().st_size for p in (Path(tmp) / "index").iterdir()}
        index = HammingIndex.load(Path(tmp) / "index")
        query_words = pack_words(queries)
        ours_seconds, (rows, distances) = timed(lambda: index.search_words(query_words, args.k))

        flat = faiss.IndexBinaryFlat(args.bits)
        flat.add(np.ascontiguousarray(index.words).view(np.uint8))
        faiss_seconds, (faiss_distances, _) = timed(
            lambda: flat.search(np.ascontiguousarray(query_words).view(np.uint8), args.k))
        # Exact search agrees with faiss distance for distance (faiss may order equal distances otherwise).
        same = bool(np.array_equal(np.sort(faiss_distances, axis=1), distances))

        start = time.perf_counter()
        ivf = build_ivf(index, args.nlist)
        ivf_build = time.perf_counter() - start
        approximate = []
        kth = distances[:, -1:]
        for nprobe in args.nprobe:
            seconds, (ivf_rows, ivf_distances) = timed(lambda: approximate_search(ivf, query_words, args.k, nprobe))
            # recall@k: the share of the exact top k found, counting ties at the k-th distance as found.
            exact_sets = [set(r.tolist()) for r in rows]
            found = [len(exact_sets[a] & set(ivf_rows[a].tolist())) + int(((ivf_distances[a] == kth[a]) &
                     ~np.isin(ivf_rows[a], rows[a])).sum()) for a in range(len(rows))]
            approximate.append({"nprobe": nprobe, "nlist": args.nlist, "queries_per_second": len(queries) / seconds,
                                f"recall@{args.k}": float(np.mean(np.minimum(found, args.k)) / args.k)})
            print(approximate[-1], flush=True)
        on_milvus = milvus_runs(index, queries, distances, args, Path(tmp) / "milvus") if args.milvus else None
    result = {
        "benchmark": "search", "codes": args.n, "bits": args.bits, "queries": args.queries, "k": args.k,
        "workload": f"clustered synthetic codes: {args.centres} centres, each bit flipped with p={args.flip}",
        "exact": {"ours_queries_per_second": len(queries) / ours_seconds,
                  "faiss_IndexBinaryFlat_queries_per_second": len(queries) / faiss_seconds,
                  "faiss_version": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
                  "same_distances_as_faiss": same},
        "index": {"build_seconds": build_seconds, "bytes": files, "bytes_per_code": files["codes.npy"] / args.n},
        "approximate": {"method": "faiss IndexBinaryIVF", "build_seconds": ivf_build, "runs": approximate},
        **({"milvus": on_milvus} if on_milvus else {}),
    }
    print({k: v for k, v in result.items() if k in ("exact", "index")})
    write_result(args.out, result)


if __name__ == "__main__":
    main()
