"""The `dsah` command: what people type to search, grow and serve the index, and compare runs.

The pipeline's own steps are the DVC stage scripts in stages/, over the same library functions."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dsah import __version__
from dsah.config import Range
from dsah.errors import ConfigError, DataError, DSAHError, exit_on_error
from dsah.limits import BACKLOG, MAX_PIXELS, MAX_UPLOAD, THREADS, TIMEOUT


def _encoder(args: argparse.Namespace, index):
    """The trained model's image encoder, refused if its codes do not fit the index."""
    from dsah.device import select_device
    from dsah.search.image_encoder import ImageEncoder

    encoder = ImageEncoder(args.model, select_device(args.device))
    if encoder.bits != index.bits:
        raise DSAHError(f"{args.model} makes {encoder.bits}-bit codes, {args.index} holds {index.bits}-bit codes")
    return encoder


def _registered(args: argparse.Namespace, store: bool = False) -> None:
    """--stage / --version: point --model and --index at that version's files (fetched through DVC)."""
    if args.stage or args.model_version:
        from dsah.experiments.registry import fetch

        fetched = fetch(args.repo, args.stage, args.model_version, store)
        args.model, args.index = fetched.model, fetched.index
        print(f"{args.stage or args.model_version}: {fetched.model.name} and the index of commit "
              f"{fetched.commit[:8]} ({fetched.index.parent.parent})", file=sys.stderr)


def cmd_search(args: argparse.Namespace) -> None:
    """Top-k database images for query images (paths) or database ids, by Hamming distance."""
    import json

    import numpy as np

    from dsah.search.image_encoder import read_images
    from dsah.search.milvus import load_index

    _registered(args)
    index = load_index(args.index)  # searched on Milvus where its manifest says so
    if not args.images and not args.id:
        raise ConfigError("search: give query image paths and/or --id database ids")
    queries, codes = [], []
    if args.images:
        codes.append(_encoder(args, index)(read_images(args.images, index.image_size, args.max_pixels)))
        queries += [str(p) for p in args.images]
    if args.id:
        codes.append(index.codes_of(index.rows_of(args.id)))
        queries += [f"id:{i}" for i in args.id]
    start = time.perf_counter()
    results = index.search(np.concatenate(codes), args.k)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"index": str(args.index), "bits": index.bits, "k": args.k, "seconds": seconds,
                          "queries": [{"query": q, "results": [vars(h) for h in hits]}
                                      for q, hits in zip(queries, results)]}, indent=2))
        return
    for query, hits in zip(queries, results):
        print(f"{query}: top {len(hits)} of {len(index)} ({index.bits} bits)")
        for hit in hits:
            print(f"  {hit.rank:>3}  d={hit.distance:<3} {hit.id:<28} {', '.join(hit.labels) or '-':<24} {hit.image}")


def _version(store: Path) -> None:
    """Record the additions store's new state with DVC where it is in a DVC project (`dvc commit`: the
    project's data/additions is the `additions` stage's output), so it is cached and in dvc.lock: a
    `dvc checkout` or `dvc exp run` then keeps it, and `dvc push` shares it. Without DVC (or if the commit
    fails, e.g. while a repro holds the lock, or the store is no stage's output), say the one command to run."""
    import importlib.util
    import os
    import shutil
    import subprocess
    import sys

    folder = store.resolve()
    root = next((p for p in folder.parents if (p / ".dvc").is_dir()), None)
    if root is None:
        print(f"{store} is outside any DVC project: nothing versions it (back it up yourself)")
        return
    target = os.path.relpath(folder, root)
    dvc = [shutil.which("dvc")] if shutil.which("dvc") else \
        [sys.executable, "-m", "dvc"] if importlib.util.find_spec("dvc") else None
    done = dvc and subprocess.run([*dvc, "commit", "--force", target], cwd=root, capture_output=True, text=True)
    if done and done.returncode == 0:
        print(f"versioned: `dvc commit {target}` recorded it in dvc.lock; commit that, and `dvc push` to share the images")
        return
    reason = (done.stderr.strip().splitlines() or ["failed"])[-1] if done else "DVC is not installed"
    print(f"warning: {store} is not versioned yet ({reason}): run `dvc commit {target}` in {root}, "
          "or the next `dvc checkout` may drop the change", file=sys.stderr)


def cmd_add(args: argparse.Namespace) -> None:
    """Encode new images with the trained model and append them to the index (no retraining); the images
    are kept in the additions store, so every later index build has them."""
    import numpy as np

    from dsah.search.additions import add_images, create_store, remove_ids
    from dsah.search.image_encoder import read_images
    from dsah.search.index import HammingIndex
    from dsah.search.milvus import add_entries  # the local folder, and Milvus for an index on it

    index = HammingIndex.load(args.index)
    encoder = _encoder(args, index)
    ids = args.ids or [Path(p).stem for p in args.images]
    if len(ids) != len(args.images):
        raise ConfigError(f"add: {len(args.images)} images but {len(ids)} ids")
    unknown = sorted(set(args.labels) - set(index.classes))
    if unknown:
        raise ConfigError(f"add: unknown label(s) {', '.join(unknown)}; known: {', '.join(index.classes)}")
    clash = sorted(set(ids) & set(index.ids.tolist()))
    if clash:
        raise DataError(f"id(s) already in the index: {', '.join(clash[:5])}; remove them first or pick other ids")
    labels = np.zeros((len(ids), len(index.classes)), dtype=np.uint8)
    labels[:, [index.classes.index(name) for name in args.labels]] = 1
    # A bad image stops us here, before anything is written.
    codes = encoder(read_images(args.images, index.image_size, args.max_pixels), side="database")
    dataset = str(index.meta.get("dataset", ""))
    store = create_store(args.additions)
    added = add_images(args.additions, dataset, args.images, ids, args.labels)
    try:
        index = add_entries(args.index, codes, ids, labels, [a.ref for a in added],
                            {a.ref: store.path(a) for a in added})
    except Exception:
        remove_ids(args.additions, dataset, ids)  # leave the store as it was
        raise
    print(f"add: {len(ids)} image(s) encoded and appended; the index holds {len(index)}; kept in {args.additions}")
    _version(args.additions)


def cmd_remove(args: argparse.Namespace) -> None:
    """Remove entries from the index by id: an added image leaves the additions store, a database image of
    the pipeline is recorded as removed there, so later index builds leave it out too."""
    from dsah.search.additions import create_store, remove_ids
    from dsah.search.index import HammingIndex
    from dsah.search.milvus import remove_entries  # the local folder, and Milvus for an index on it

    index = HammingIndex.load(args.index)
    dataset = str(index.meta.get("dataset", ""))
    added = {a.id for a in create_store(args.additions).of(dataset)[0]}
    present = set(index.ids.tolist())
    unknown = [i for i in args.ids if i not in present and i not in added]
    if unknown:
        raise DataError(f"unknown id(s) in {args.index}: {', '.join(unknown[:5])}")
    deleted, tombstoned = remove_ids(args.additions, dataset, args.ids)
    in_index = [i for i in dict.fromkeys(args.ids) if i in present]
    if in_index:
        index = remove_entries(args.index, in_index)
    print(f"remove: {len(set(args.ids))} removed ({len(deleted)} added image(s) deleted from {args.additions}, "
          f"{len(tombstoned)} database image(s) recorded in its removed.csv); the index holds {len(index)}")
    _version(args.additions)


def cmd_additions(args: argparse.Namespace) -> None:
    """List what users added to the index and removed from it (the additions store); where there is no
    store yet (a clone whose DVC remote lacks it), start an empty one."""
    from dsah.search.additions import ADDED, create_store

    existed = (args.additions / ADDED).is_file()
    store = create_store(args.additions)
    for a in store.added:
        print(f"added    {a.dataset:<10} {a.id:<28} {', '.join(a.labels) or '-':<24} {a.file}")
    for entry, dataset in store.removed:
        print(f"removed  {dataset:<10} {entry}")
    print(f"{args.additions}: {len(store.added)} added image(s), {len(store.removed)} removed database image(s)"
          + ("" if existed else " (an empty store, started now)"))
    if not existed:
        _version(args.additions)


def cmd_serve(args: argparse.Namespace) -> None:
    """A local web page and JSON API: upload or pick a query image, see the top results."""
    from dsah.search.milvus import load_index
    from dsah.search.serve import SearchService, make_server

    _registered(args, store=True)
    index = load_index(args.index)
    service = SearchService(index, _encoder(args, index), args.max_upload, args.max_pixels)
    try:
        server = make_server(service, args.host, args.port, threads=args.threads, backlog=args.backlog,
                             timeout=args.timeout, allowed_hosts=tuple(args.allowed_host), parser=args.parser)
    except ValueError as error:
        raise ConfigError(f"serve: {error}") from None
    except OSError as error:
        raise DSAHError(f"serve: cannot listen on {args.host}:{args.port} ({error.strerror or error})") from None
    host, port = server.server_address[:2]
    print(f"serve: {len(service.index)} codes of {service.index.bits} bits at http://{host}:{port}/ "
          f"({args.threads} threads; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def cmd_compare(args: argparse.Namespace) -> None:
    """Tab.1 layout (methods x code lengths per dataset and protocol) from this repository's DVC experiments."""
    from dsah.experiments.compare import collect_runs, experiment_heatmaps, write_comparison

    runs = collect_runs(args.repo, args.all_commits, args.experiments or None)
    print(write_comparison(runs, args.markdown, args.csv, args.plot, experiment_heatmaps(args.repo)))


def number(kind: type, allowed: Range) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` within `allowed`, else argparse's one-line usage error (exit 2)
    saying what is allowed, as params.yaml's checks do."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed.describe(kind)}") from None
        if not allowed.allows(value):
            raise argparse.ArgumentTypeError(f"{text} is {allowed.problem}; allowed: {allowed.describe(kind)}")
        return value
    parse.__name__ = "integer" if kind is int else "number"  # argparse names the type in some messages
    return parse


POSITIVE, PORT = number(int, Range(1)), number(int, Range(0, 65535))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsah", description="Deep semantic asymmetric hashing.")
    parser.add_argument("--version", action="version", version=f"dsah {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=handler.__doc__.splitlines()[0], description=handler.__doc__)
        sub.set_defaults(handler=handler)
        return sub

    for name, handler in (("search", cmd_search), ("add", cmd_add), ("serve", cmd_serve)):
        sub = add(name, handler)
        sub.add_argument("--index", type=Path, default=Path("data/index"), help="index folder (default: data/index)")
        sub.add_argument("--model", type=Path, default=Path("models/model.pt"), help="trained model (encodes images)")
        sub.add_argument("--device", default="auto", help="auto | cpu | cuda")
        if name != "add":  # a registered version is read, never grown
            which = sub.add_mutually_exclusive_group()
            which.add_argument("--stage", help="the model of this stage of the model registry (e.g. prod: "
                                               "GTO's tags) and its commit's index, instead of --model/--index")
            which.add_argument("--version", dest="model_version", metavar="VERSION",
                               help="the model of this version (e.g. v0.0.3) and its commit's index")
            sub.add_argument("--repo", type=Path, default=Path("."),
                             help="the project whose registry --stage/--version read (default: here)")
        sub.add_argument("--max-pixels", type=POSITIVE, default=MAX_PIXELS,
                         help=f"refuse query images whose header declares more pixels, before decoding "
                              f"(default {MAX_PIXELS:,})")
    search = commands.choices["search"]
    search.add_argument("images", nargs="*", type=Path, help="query image files")
    search.add_argument("--id", nargs="+", help="database ids as queries")
    search.add_argument("-k", type=POSITIVE, default=10, help="results per query (default 10)")
    search.add_argument("--json", action="store_true", help="machine-readable output")
    adder = commands.choices["add"]
    adder.add_argument("images", nargs="+", type=Path, help="image files to add")
    adder.add_argument("--ids", nargs="+", help="their ids (default: file names without extension)")
    adder.add_argument("--labels", nargs="*", default=[], help="class names all the added images carry")
    server = commands.choices["serve"]
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    server.add_argument("--port", type=PORT, default=8000, help="port (0: any free one)")
    server.add_argument("--max-upload", type=POSITIVE, default=MAX_UPLOAD, help="upload limit in bytes")
    server.add_argument("--threads", type=POSITIVE, default=THREADS,
                        help=f"worker threads: requests worked on at once (decoding, encoding, searching; "
                             f"default {THREADS})")
    server.add_argument("--backlog", type=POSITIVE, default=BACKLOG,
                        help=f"connections held beyond the workers: past threads + backlog open connections, "
                             f"new requests get 503 (also the listen backlog; default {BACKLOG})")
    server.add_argument("--timeout", type=number(float, Range(0.0, 3600.0, above=True)), default=TIMEOUT,
                        help=f"seconds a client has to send its whole request (default {TIMEOUT:g})")
    server.add_argument("--parser", choices=("httptools", "h11"), default="httptools",
                        help="uvicorn's HTTP/1.1 parser: httptools (C, default) or h11 (pure Python)")
    server.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests for this Host (a reverse proxy's name; repeatable); bound to "
                             "loopback, only localhost, 127.0.0.1 and [::1] are answered otherwise")
    rm = add("remove", cmd_remove)
    rm.add_argument("--index", type=Path, default=Path("data/index"))
    rm.add_argument("ids", nargs="+", help="ids to remove")
    additions = add("additions", cmd_additions)
    for sub in (adder, rm, additions):
        sub.add_argument("--additions", type=Path, default=Path("data/additions"),
                         help="the additions store, outside every pipeline output (default: data/additions)")
    cmp = add("compare", cmd_compare)
    cmp.add_argument("--repo", type=Path, default=Path("."), help="DVC repository (default: here)")
    cmp.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    cmp.add_argument("--markdown", type=Path, default=Path("reports/compare.md"))
    cmp.add_argument("--csv", type=Path, default=Path("reports/compare.csv"), help="one row per run")
    cmp.add_argument("--plot", type=Path, default=Path("reports/compare.svg"),
                     help="mAP by code length (SVG); P@5000 goes beside it as <name>-p5000.svg")
    cmp.add_argument("--experiments", nargs="*", help="only these experiments (default: all)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    exit_on_error(f"dsah {args.command}")(args.handler)(args)  # bad input: one line and exit status 2


if __name__ == "__main__":
    main()
