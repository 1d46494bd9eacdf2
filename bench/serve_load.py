"""Load on `dsah serve`: many concurrent clients searching by upload (PNG bytes) and by id, on loopback.

python bench/serve_load.py --out bench/results/serve_load_cpu.json        (200 clients, 10,000 CIFAR-10 codes)
python bench/serve_load.py --baseline 8199169 --rounds 2 --out ...        (and the server as it was at a commit)
python bench/serve_load.py --database 300 --clients 10 --requests 3 --out /tmp/l.json   (a quick check)

The server is the real command, `dsah serve` in its own process with its default worker pool, timeout and
backlog, over an index built here: a seeded sample of CIFAR-10 training images (their image store, their
codes) and a classic model, ITQ fitted on their 16 x 16 pixels and saved as the train stage saves one, so
uploads are encoded for real. Upload queries are CIFAR-10 test images (not in the index) as PNG files;
id queries are database ids. The clients are threads of this process, released together; each sends its
requests one after another, a new connection per request. Every request must be answered with 200:
anything else, or a connection error, is counted as an error. With --baseline, the same load goes to
`dsah serve` as it was at that commit too (its src/ from a git worktree, on the same index and model), the
servers taking turns round by round.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from common import machine, project_config, write_result  # noqa: E402

from dsah.data.cifar10 import locate_cifar10, read_cifar10  # noqa: E402
from dsah.data.protocols import CIFAR10_CLASSES  # noqa: E402
from dsah.evaluation.markdown import markdown_table  # noqa: E402
from dsah.nets.features import pixels  # noqa: E402
from dsah.search.index import write_index  # noqa: E402
from dsah.limits import BACKLOG, THREADS, TIMEOUT  # noqa: E402
from dsah.methods.classic import fit_classic  # noqa: E402
from dsah.settings import ITQSettings  # noqa: E402

FEATURE_SIZE = 16  # ITQ's input: 16 x 16 x 3 pixels


def build_index(folder: Path, archive: str, database: int, queries: int, bits: int, seed: int) -> dict:
    """The index, store and model under `folder`; -> what was built, and the upload queries' PNG bytes."""
    data = read_cifar10(locate_cifar10(archive).path)
    rng = np.random.default_rng(seed)
    train = np.flatnonzero([i.startswith("train/") for i in data.ids])
    test = np.flatnonzero([i.startswith("test/") for i in data.ids])
    if len(train) < database or len(test) < queries:
        raise SystemExit(f"serve_load: the archive has {len(train)} training and {len(test)} test images; "
                         f"asked for {database} and {queries}")
    rows = np.sort(rng.choice(train, database, replace=False))
    images, classes = data.images[rows], data.classes[rows]
    np.save(folder / "store.npy", images)
    features = pixels(torch.from_numpy(images).permute(0, 3, 1, 2), size=FEATURE_SIZE)
    settings = project_config("methods.itq", ITQSettings)
    labels = np.eye(len(CIFAR10_CLASSES), dtype=np.uint8)[classes]
    hash_function, _ = fit_classic("itq", settings, bits, features, labels, seed)
    torch.save({"kind": "classic", "method": "itq", "bits": bits, "hash_function": hash_function.state(),
                "features": {"extractor": "pixels", "size": FEATURE_SIZE, "weights": "", "batch": 256}},
               folder / "model.pt")
    ids = [data.ids[r] for r in rows]
    write_index(folder / "index", hash_function.encode(features), ids, labels,
                [f"store:{i}" for i in range(database)],
                {"bits": bits, "classes": list(CIFAR10_CLASSES), "store": "../store.npy",
                 "image_shape": [32, 32, 3], "method": "itq", "built": "bench/serve_load.py"})
    uploads = []
    for row in rng.choice(test, queries, replace=False):
        buffer = io.BytesIO()
        Image.fromarray(data.images[row]).save(buffer, format="PNG")
        uploads.append(buffer.getvalue())
    return {"ids": ids, "uploads": uploads}


def start_server(folder: Path, threads: int, source: Path | None = None) -> tuple[subprocess.Popen, int]:
    """`dsah serve` on a free loopback port, from this checkout or from `source` (another commit's src/);
    -> the process and its port (read from its first line)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    process = subprocess.Popen(
        [sys.executable, "-m", "dsah.cli", "serve", "--index", str(folder / "index"), "--model",
         str(folder / "model.pt"), "--device", "cpu", "--port", "0", "--threads", str(threads)],
        stdout=subprocess.PIPE, text=True, env=env)
    line = process.stdout.readline()
    if "http://" not in line:
        process.kill()
        raise SystemExit(f"serve_load: dsah serve did not start ({line.strip() or 'no output'})")
    return process, int(line.split("http://")[1].split("/")[0].rsplit(":", 1)[1])


@contextlib.contextmanager
def checkout(commit: str):
    """The repository's `commit` in a temporary git worktree; -> its src/ folder."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), commit], check=True,
                       cwd=ROOT)
        try:
            yield tree / "src"
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], check=True, cwd=ROOT)


def one_request(port: int, method: str, path: str, body: bytes | None) -> tuple[float, str | None]:
    """-> (seconds, None) for a 200 with results, (seconds, what went wrong) otherwise."""
    start = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.status != 200:
            return time.perf_counter() - start, f"HTTP {response.status}: {payload[:200]!r}"
        if not json.loads(payload)["results"]:
            return time.perf_counter() - start, "no results"
        return time.perf_counter() - start, None
    except (OSError, http.client.HTTPException, ValueError) as error:
        return time.perf_counter() - start, f"{type(error).__name__}: {error}"


def described(info: dict) -> str:
    return f"{info['device']}, {info['cpus']} CPUs, Python {info['python']}, commit {info['commit']}"


def summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def plan_requests(built: dict, clients: int, requests: int, k: int, seed: int) -> list[list[tuple]]:
    """Per client: its requests, alternating upload and id (which first, at random)."""
    rng = np.random.default_rng(seed + 1)
    plans = []
    for client in range(clients):
        plan = []
        for r in range(requests):
            if (r + client) % 2:
                upload = built["uploads"][rng.integers(len(built["uploads"]))]
                plan.append(("upload", "POST", f"/api/search?k={k}", upload))
            else:
                entry = built["ids"][rng.integers(len(built["ids"]))]
                plan.append(("id", "GET", f"/api/search?id={entry}&k={k}", None))
        plans.append(plan)
    return plans


def measure(port: int, plans: list[list[tuple]], unloaded: int, warm: tuple) -> dict:
    """One client alone first (`unloaded` requests), then every client at once, released together."""
    for method, path, body in warm:  # the first encode and search pay for imports and compilation
        one_request(port, method, path, body)
    alone = [one_request(port, method, path, body) for _, method, path, body in (plans[0] * unloaded)[:unloaded]]
    results: list[list[tuple[str, float, str | None]]] = [[] for _ in plans]
    ready = threading.Barrier(len(plans) + 1)

    def client(number: int) -> None:
        ready.wait()
        for kind, method, path, body in plans[number]:
            seconds, error = one_request(port, method, path, body)
            results[number].append((kind, seconds, error))

    workers = [threading.Thread(target=client, args=(n,)) for n in range(len(plans))]
    for worker in workers:
        worker.start()
    ready.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - start
    flat = [item for per_client in results for item in per_client]
    errors = [error for _, _, error in flat if error is not None]
    return {
        "requests": len(flat), "answered": len(flat) - len(errors), "errors": len(errors),
        "error_examples": sorted(set(errors))[:10], "wall_seconds": wall, "queries_per_second": len(flat) / wall,
        "latency": {"all": summary([s for _, s, _ in flat]),
                    **{kind: summary([s for k, s, _ in flat if k == kind]) for kind in ("upload", "id")}},
        "unloaded": {"requests": len(alone), "errors": sum(e is not None for _, e in alone),
                     **summary([s for s, _ in alone])},
    }


def table_row(name: str, run: dict, clients: int) -> list[str]:
    latency = run["latency"]
    return [name, f"{run['requests']:,}", str(clients), str(run["errors"]), f"{run['queries_per_second']:,.0f}",
            f"{latency['all']['p50_ms']:.1f}", f"{latency['all']['p99_ms']:.1f}",
            f"{latency['upload']['p50_ms']:.1f} / {latency['upload']['p99_ms']:.1f}",
            f"{latency['id']['p50_ms']:.1f} / {latency['id']['p99_ms']:.1f}",
            f"{run['unloaded']['p50_ms']:.1f} / {run['unloaded']['p99_ms']:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default="", help="CIFAR-10 archive (default: found in $DSAH_DATA_HOME)")
    parser.add_argument("--database", type=int, default=10_000, help="codes in the index")
    parser.add_argument("--queries", type=int, default=100, help="distinct upload query images")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=20, help="requests per client, half uploads, half ids")
    parser.add_argument("--k", type=int, default=20, help="results per query (the page's default)")
    parser.add_argument("--threads", type=int, default=THREADS, help="the server's worker threads")
    parser.add_argument("--unloaded", type=int, default=100,
                        help="requests of one client alone first: the latency without a queue")
    parser.add_argument("--baseline", metavar="COMMIT", default="",
                        help="also load `dsah serve` as it was at COMMIT (a git worktree), in the same run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="load each server this many times, alternating (a busy spell hits both alike)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    load_before = os.getloadavg()  # others' work on a shared machine shows in the figures
    servers = {"current": None}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as trees:
        if args.baseline:
            servers = {f"baseline {args.baseline}": trees.enter_context(checkout(args.baseline)), **servers}
        folder = Path(tmp)
        start = time.perf_counter()
        built = build_index(folder, args.archive, args.database, args.queries, args.bits, args.seed)
        build_seconds = time.perf_counter() - start
        plans = plan_requests(built, args.clients, args.requests, args.k, args.seed)
        warm = (("GET", f"/api/search?id={built['ids'][0]}&k=1", None),
                ("POST", "/api/search?k=1", built["uploads"][0]))
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, source in servers.items():
                server, port = start_server(folder, args.threads, source)
                try:
                    runs[name].append(measure(port, plans, args.unloaded, warm))
                finally:
                    server.terminate()
                    server.wait(timeout=30)
    last = runs["current"][-1]
    result = {
        "benchmark": "serve_load", "clients": args.clients, "requests_per_client": args.requests,
        **last, "k": args.k, "rounds": args.rounds,
        "servers": {name: {"source": "this checkout" if source is None else f"commit {args.baseline}",
                           "runs": runs[name]} for name, source in servers.items()},
        "index": {"codes": args.database, "bits": args.bits, "build_seconds": build_seconds,
                  "images": "a seeded sample of CIFAR-10 training images (32 px, their image store)",
                  "model": f"ITQ on {FEATURE_SIZE}x{FEATURE_SIZE} pixels (classic model: cheap to encode)",
                  "uploads": f"{args.queries} CIFAR-10 test images as PNG "
                             f"(~{np.mean([len(u) for u in built['uploads']]) / 1000:.1f} KB each)"},
        "load_average_before": {"1min": load_before[0], "5min": load_before[1]},
        "server": {"command": "dsah serve (its own process)", "threads": args.threads, "backlog": BACKLOG,
                   "timeout_s": TIMEOUT, "protocol": "a connection per request"},
    }
    print(json.dumps({name: [{k: run[k] for k in ("requests", "errors", "queries_per_second", "latency")}
                             for run in runs[name]] for name in servers}, indent=1))
    write_result(args.out, result)
    columns = ["server", "requests", "clients", "errors", "queries/s", "p50 ms", "p99 ms", "upload p50 / p99 ms",
               "id p50 / p99 ms", "one client alone p50 / p99 ms"]
    lines = [markdown_table(columns, [table_row(f"{name} (round {i + 1})" if args.rounds > 1 else name, run,
                                                args.clients)
                                      for i in range(args.rounds) for name in servers for run in runs[name][i:i + 1]])]
    lines += ["", f"`dsah serve` ({args.threads} worker threads, backlog {BACKLOG}) over {args.database:,} "
              f"{args.bits}-bit codes of CIFAR-10 images, top {args.k}; {args.clients} concurrent clients on "
              f"loopback, {args.requests} requests each (half PNG uploads, half database ids), a connection "
              f"per request; the clients (threads of one Python process) and the server share the machine (load "
              f"average {load_before[0]:.1f} before the run); servers alternate round by round. Model: "
              f"{result['index']['model']}. Machine: {described(machine())}."]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
