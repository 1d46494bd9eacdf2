"""The `dsah` command. Each DVC stage script in stages/ is a thin call of one subcommand here."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from dsah import __version__
from dsah.errors import ConfigError, DSAHError


def cmd_prepare(args: argparse.Namespace) -> None:
    """Read the dataset chosen in params.yaml, split it and write the prepared folder."""
    from dsah.config import load_params
    from dsah.data.prepare import prepare, prepare_params, write_prepared

    start = time.perf_counter()
    params = load_params(args.params)
    common, _ = prepare_params(params)
    prepared = prepare(params)
    write_prepared(prepared, args.out, params["split_seed"], common["validation_size"])
    counts = prepared.meta(params["split_seed"], common["validation_size"])["counts"]
    print(f"prepare: {prepared.dataset} ({prepared.protocol.name}) from {prepared.source['name']}: "
          f"{counts['queries']} queries, {counts['database']} database, {counts['validation']} validation "
          f"in {time.perf_counter() - start:.1f} s -> {args.out}")
    for note in prepared.notes:
        print(f"prepare: note: {note}")


def cmd_validate(args: argparse.Namespace) -> None:
    """Check a prepared folder against its retrieval protocol with Great Expectations.

    The report is written whether or not the checks pass; exit status 1 lists the failed checks.
    """
    from dsah.config import load_params, section
    from dsah.data.prepare import DEFAULTS, prepare_params, protocol_for
    from dsah.data.protocols import get_protocol
    from dsah.data.table import META_FILE, STORE_FILE, TABLE_FILE, open_store, read_meta, read_table
    from dsah.validation import validate_prepared, write_report

    params = load_params(args.params)
    validation_size = prepare_params(params)[0]["validation_size"]
    for name in (TABLE_FILE, META_FILE):
        if not (args.prepared / name).is_file():
            raise DSAHError(f"{args.prepared / name} not found; run the prepare stage first")
    meta = read_meta(args.prepared / META_FILE)
    if meta.get("protocol") == "cifar10-mosaic":  # its sizes are knobs, so they come from params
        mosaic = section(params, "prepare.cifar10-mosaic", DEFAULTS["cifar10-mosaic"])
        protocol = protocol_for("cifar10-mosaic", mosaic)
    else:
        protocol = get_protocol(meta.get("protocol"))
    store = open_store(args.prepared / STORE_FILE) if (args.prepared / STORE_FILE).is_file() else None
    result = validate_prepared(read_table(args.prepared / TABLE_FILE), protocol, validation_size, store)
    write_report(result, args.out)
    print(f"validate: report written to {args.out}")
    if not result.success:
        print(result.summary(), file=sys.stderr)  # one line per failed check
        sys.exit(1)
    print(result.summary())


def read_output(path: Path, stage: str) -> dict:
    """A JSON file another stage writes; missing, it says which stage to run."""
    import json

    if not path.is_file():
        raise DSAHError(f"{path} not found; run the {stage} stage first")
    return json.loads(path.read_text())


def cmd_plan(args: argparse.Namespace) -> None:
    """Check every param the chosen method reads, and write which optional stages it uses.

    Each optional stage (features, train_lae) depends on its own plan file, whose content changes only
    when that stage's use changes: switching between two methods that both use (or both skip) a stage
    leaves it as it was, and a skipped stage only writes a marker.
    """
    from dsah.config import CLASSIC_METHODS, LAE_METHODS, load_params, section
    from dsah.data.table import write_json
    from dsah.features import FEATURE_DEFAULTS, check_features
    from dsah.lae import LAEConfig
    from dsah.methods import method_settings
    from dsah.train import train_config

    params = load_params(args.params)
    method = params["method"]
    method_settings(params, method)
    classic = method in CLASSIC_METHODS
    if classic:
        check_features(section(params, "features", FEATURE_DEFAULTS))
    else:
        train_config(params)
    if method in LAE_METHODS:
        section(params, "train_lae", asdict(LAEConfig()))
    args.out.mkdir(parents=True, exist_ok=True)
    uses = {"features": classic, "lae": method in LAE_METHODS}
    for stage, used in uses.items():
        write_json({"used": used}, args.out / f"{stage}.json")
    print(f"plan: {method} uses " + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in uses.items()))


def cmd_features(args: argparse.Namespace) -> None:
    """Fixed image features for the classic methods (a marker only, for methods that learn from images)."""
    import numpy as np

    from dsah.config import load_params, section
    from dsah.data.loading import load_prepared
    from dsah.data.table import write_json
    from dsah.features import FEATURE_DEFAULTS, check_features, describe, extract
    from dsah.io import atomic_path
    from dsah.train import select_device

    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.iterdir():
        old.unlink()
    if not read_output(args.plan, "plan")["used"]:
        write_json({"used": False, "why": "the chosen method learns from the images"}, args.out / "meta.json")
        print("features: not used by the chosen method (skipped)")
        return
    options = check_features(section(load_params(args.params), "features", FEATURE_DEFAULTS))
    device = select_device(options["device"])
    data = load_prepared(args.prepared)
    start = time.perf_counter()
    arrays = {}
    for name, split in (("database", data.database), ("query", data.query)):
        arrays[name] = extract(options["extractor"], data.images(split), options["size"], options["weights"],
                               options["batch"], device).astype(np.float32)
        with atomic_path(args.out / f"{name}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, arrays[name], allow_pickle=False)
    seconds = time.perf_counter() - start
    images = sum(len(a) for a in arrays.values())
    dim = arrays["database"].shape[1]
    write_json({"used": True, **options, "dim": dim,
                "description": describe(options["extractor"], options["size"], dim), "seconds": seconds,
                "images_per_second": images / max(seconds, 1e-9), "device": str(device)}, args.out / "meta.json")
    print(f"features: {describe(options['extractor'], options['size'], dim)} for {images} images "
          f"in {seconds:.0f} s ({images / max(seconds, 1e-9):.0f} images/s) -> {args.out}")


def cmd_train_lae(args: argparse.Namespace) -> None:
    """Train the label auto-encoder on the database labels; write it, the label codes and metrics."""
    import numpy as np
    import torch

    from dsah.config import load_params, section
    from dsah.data.loading import load_prepared
    from dsah.data.table import write_json
    from dsah.io import atomic_path
    from dsah.lae import LAEConfig, train_lae

    if not read_output(args.plan, "plan")["used"]:  # markers, so DVC has its outputs; nothing reads them
        with atomic_path(args.model) as tmp:
            torch.save({"used": False}, tmp)
        with atomic_path(args.codes) as tmp, open(tmp, "wb") as f:
            np.save(f, np.zeros((0, 0), dtype=np.int8), allow_pickle=False)
        write_json({"used": False}, args.metrics)
        print("train_lae: the chosen method does not use the label auto-encoder (skipped)")
        return
    params = load_params(args.params)
    config = LAEConfig(**section(params, "train_lae", asdict(LAEConfig())))
    data = load_prepared(args.prepared)
    start = time.perf_counter()
    result = train_lae(data.database.labels, params["bits"], config, params["seed"])
    seconds = time.perf_counter() - start
    with atomic_path(args.model) as tmp:
        torch.save({"used": True, "state_dict": result.model.state_dict(), "config": asdict(config),
                    "bits": params["bits"], "num_classes": data.database.labels.shape[1],
                    "classes": data.meta["classes"]}, tmp)
    with atomic_path(args.codes) as tmp, open(tmp, "wb") as f:
        np.save(f, result.label_codes, allow_pickle=False)
    write_json({"used": True, **result.metrics, "seconds": seconds, "bits": params["bits"]}, args.metrics)
    m = result.metrics
    print(f"train_lae: {m['distinct_label_vectors']} label vectors -> {m['distinct_codes']} codes, "
          f"reconstruction {m['reconstruction_exact']:.3f}, bit balance {m['bit_balance']:.3f}, "
          f"mAC {m['mAC']:.3f} in {seconds:.1f} s")


def cmd_train(args: argparse.Namespace) -> None:
    """Train the chosen method: a network by the alternating optimization (deep methods; resumes from a
    checkpoint) or a hash function on the fixed features (classic methods)."""
    import numpy as np
    import torch

    from dsah.config import CLASSIC_METHODS, LAE_METHODS, load_params
    from dsah.data.loading import load_prepared
    from dsah.data.table import write_json
    from dsah.distributed import launched_by_torchrun, process_group, run_on_this_node
    from dsah.io import atomic_path, file_digest
    from dsah.methods import method_settings
    from dsah.methods.classic import train_classic
    from dsah.nets.lae import LabelAutoEncoder
    from dsah.train import TrainData, train, train_config, write_log

    params = load_params(args.params)
    method, bits = params["method"], params["bits"]
    settings = method_settings(params, method)
    config = None if method in CLASSIC_METHODS else train_config(params)
    processes = config.processes if config else 1
    if processes > 1 and not launched_by_torchrun():
        # The same command, data-parallel on this node: torchrun starts the processes (dsah.distributed).
        print(f"train: starting {processes} processes with torchrun", flush=True)
        run_on_this_node(processes, args.argv)
        return
    data = load_prepared(args.prepared)
    saved = {"method": method, "settings": asdict(settings), "bits": bits, "dataset": data.meta["dataset"],
             "num_classes": len(data.meta["classes"])}
    if method in CLASSIC_METHODS:
        features_meta = read_output(args.features / "meta.json", "features")
        if not features_meta.get("used"):
            raise DSAHError(f"{args.features} holds no features; run the plan and features stages for {method}")
        features = np.load(args.features / "database.npy", allow_pickle=False)
        try:
            result = train_classic(method, settings, bits, features, data.database.labels, data.pool,
                                   data.validation, params["seed"], features_meta["description"])
        except ValueError as error:
            raise ConfigError(str(error)) from None
        # The extractor settings go with the model: new images (search, index additions) need them.
        features_options = {k: features_meta[k] for k in ("extractor", "size", "weights", "batch")}
        saved.update(kind="classic", hash_function=result.hash_function.state(), features=features_options)
        codes, history, metrics = result.codes, result.history, result.metrics
    else:
        label_codes = decoder = None
        if method in LAE_METHODS:
            lae_state = torch.load(args.lae, map_location="cpu", weights_only=True)
            if not lae_state.get("used"):
                raise DSAHError(f"{args.lae} is a skipped-stage marker; rerun the plan and train_lae stages")
            lae = LabelAutoEncoder(lae_state["num_classes"], lae_state["bits"], lae_state["config"]["hidden"])
            lae.load_state_dict(lae_state["state_dict"])
            label_codes, decoder = torch.from_numpy(np.load(args.label_codes, allow_pickle=False)), lae.decoder
        train_data = TrainData(
            images=data.images(data.database), labels=torch.from_numpy(data.database.labels),
            pool=torch.from_numpy(data.pool), validation=torch.from_numpy(data.validation),
            label_codes=label_codes, decoder=decoder)
        signature = "/".join(file_digest(p) for p in (args.prepared / "split.csv", args.prepared / "meta.json",
                                                      args.label_codes))
        with process_group(config.device) as world:
            result = train(train_data, bits, config, method, params["seed"], settings=settings,
                           checkpoint=args.checkpoint, data_signature=signature)
        if not world.is_main:  # rank 0 writes the outputs
            return
        saved.update(kind="network", config=asdict(config), state_dict=result.model.state_dict())
        codes, history, metrics = result.codes.cpu().numpy().astype(np.int8), result.history, result.metrics
    with atomic_path(args.model) as tmp:
        torch.save(saved, tmp)
    with atomic_path(args.codes) as tmp, open(tmp, "wb") as f:
        np.save(f, codes, allow_pickle=False)
    write_log(history, args.train_log)
    write_json(metrics, args.metrics)
    args.checkpoint.unlink(missing_ok=True)  # finished: a later run with changed code must start afresh
    print(f"train: {method} {bits} bits on {metrics['features']}, validation mAP {metrics['val_mAP']:.4f}, "
          f"{metrics['train_seconds']:.0f} s on {metrics['device']}")


def cmd_encode(args: argparse.Namespace) -> None:
    """Encode the queries with the trained model; database codes are the learned ones (or, as an option
    for deep methods, the network's)."""
    import numpy as np

    from dsah.config import load_params, section
    from dsah.data.loading import load_prepared
    from dsah.encode import load_model, save_codes
    from dsah.train import encode, select_device

    params = load_params(args.params)
    options = section(params, "encode", {"database": "learned", "device": "auto"})
    if options["database"] not in ("learned", "network"):
        raise ConfigError(f"encode.database: {options['database']!r}; choose learned or network")
    data = load_prepared(args.prepared)
    model, saved = load_model(args.model)
    start = time.perf_counter()
    db_codes = np.load(args.database_codes, allow_pickle=False)
    if saved["kind"] == "classic":  # the hash function of the fixed features; its database codes are learned
        query_codes = model.encode(np.load(args.features / "query.npy", allow_pickle=False))
        mode = "learned"
    else:
        device = select_device(options["device"])
        model = model.to(device)
        query_codes = encode(model, data.images(data.query), device).cpu().numpy().astype(np.int8)
        mode = options["database"]
        if mode == "network":  # what images added later get: sign(F(x)) (DAPH: its database network)
            db_codes = encode(model, data.images(data.database), device, side="database").cpu().numpy().astype(np.int8)
    args.out.mkdir(parents=True, exist_ok=True)
    save_codes(args.out / "query.npz", data.query.ids, query_codes)
    save_codes(args.out / "database.npz", data.database.ids, db_codes)
    print(f"encode: {len(query_codes)} queries ({time.perf_counter() - start:.1f} s), "
          f"{len(db_codes)} database codes ({mode}) -> {args.out}")


def cmd_index(args: argparse.Namespace) -> None:
    """Build the search index from the database codes: codes, ids, labels and image references."""
    import os

    from dsah.config import load_params
    from dsah.data.loading import load_prepared
    from dsah.encode import load_codes
    from dsah.index import write_index

    params = load_params(args.params)
    data = load_prepared(args.prepared)
    start = time.perf_counter()
    ids, codes = load_codes(args.codes / "database.npz")
    if ids != data.database.ids:
        raise DSAHError(f"{args.codes}: its database ids differ from {args.prepared}'s; rerun encode")
    table = data.database.table
    store = data.meta["images"].get("store", False)
    refs = [f"store:{row}" for row in table["store_index"]] if store else table["image"].tolist()
    meta = {"bits": int(codes.shape[1]), "classes": data.meta["classes"], "dataset": data.meta["dataset"],
            "method": params["method"],  # the image store, relative to the index folder (moves with the project)
            "store": os.path.relpath(args.prepared / "images.npy", args.out) if store else None,
            "image_shape": data.meta["images"].get("shape"), "built": "index stage"}
    write_index(args.out, codes, ids, data.database.labels, refs, meta)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"index: {len(ids)} codes of {codes.shape[1]} bits in {time.perf_counter() - start:.1f} s, "
          f"{size / 1e6:.1f} MB ({-(-codes.shape[1] // 64) * 8} bytes of code each: whole 64-bit words) -> {args.out}")


def _encoder(args: argparse.Namespace, index):
    """The trained model's image encoder, refused if its codes do not fit the index."""
    from dsah.encode import ImageEncoder
    from dsah.train import select_device

    encoder = ImageEncoder(args.model, select_device(args.device))
    if encoder.bits != index.bits:
        raise DSAHError(f"{args.model} makes {encoder.bits}-bit codes, {args.index} holds {index.bits}-bit codes")
    return encoder


def cmd_search(args: argparse.Namespace) -> None:
    """Top-k database images for query images (paths) or database ids, by Hamming distance."""
    import json

    import numpy as np

    from dsah.encode import read_images
    from dsah.index import HammingIndex

    index = HammingIndex.load(args.index)
    if not args.images and not args.id:
        raise ConfigError("search: give query image paths and/or --id database ids")
    queries, codes = [], []
    if args.images:
        codes.append(_encoder(args, index)(read_images(args.images, index.image_size)))
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


def cmd_add(args: argparse.Namespace) -> None:
    """Encode new images with the trained model and append them to the index (no retraining)."""
    import shutil
    import uuid

    import numpy as np

    from dsah.encode import read_images
    from dsah.index import HammingIndex, add_entries

    index = HammingIndex.load(args.index)
    encoder = _encoder(args, index)
    ids = args.ids or [Path(p).stem for p in args.images]
    if len(ids) != len(args.images):
        raise ConfigError(f"add: {len(args.images)} images but {len(ids)} ids")
    unknown = sorted(set(args.labels) - set(index.classes))
    if unknown:
        raise ConfigError(f"add: unknown label(s) {', '.join(unknown)}; known: {', '.join(index.classes)}")
    labels = np.zeros((len(ids), len(index.classes)), dtype=np.uint8)
    labels[:, [index.classes.index(name) for name in args.labels]] = 1
    codes = encoder(read_images(args.images, index.image_size), side="database")
    (args.index / "added").mkdir(exist_ok=True)
    refs = [f"added/{uuid.uuid4().hex}{Path(image).suffix.lower()}" for image in args.images]
    for image, ref in zip(args.images, refs):  # the index keeps its own copy: it serves nothing else
        shutil.copyfile(image, args.index / ref)
    try:  # add_entries refuses ids already in the index, among others
        index = add_entries(args.index, codes, ids, labels, refs)
    except Exception:
        for ref in refs:  # leave the index as it was
            (args.index / ref).unlink(missing_ok=True)
        raise
    print(f"add: {len(ids)} image(s) encoded and appended; the index holds {len(index)}")


def cmd_remove(args: argparse.Namespace) -> None:
    """Remove entries from the index by id."""
    from dsah.index import remove_entries

    index = remove_entries(args.index, args.ids)
    print(f"remove: {len(args.ids)} removed; the index holds {len(index)}")


def cmd_serve(args: argparse.Namespace) -> None:
    """A local web page and JSON API: upload or pick a query image, see the top results."""
    from dsah.index import HammingIndex
    from dsah.serve import SearchService, make_server

    index = HammingIndex.load(args.index)
    service = SearchService(index, _encoder(args, index), args.max_upload)
    server = make_server(service, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serve: {len(service.index)} codes of {service.index.bits} bits at http://{host}:{port}/ "
          "(Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Retrieval metrics (mAP, mAP@K, P@5000, radius-2 precision, mAC), curves and the correlation heatmap."""
    import json

    from dsah.config import load_params, section
    from dsah.data.loading import load_prepared
    from dsah.encode import load_codes
    from dsah.evaluation import evaluate, write_outputs

    params = load_params(args.params)
    options = section(params, "evaluate", {"map_topk": 5000})
    data = load_prepared(args.prepared)
    query_ids, query_codes = load_codes(args.codes / "query.npz")
    db_ids, db_codes = load_codes(args.codes / "database.npz")
    start = time.perf_counter()
    metrics, scores = evaluate(data, query_ids, query_codes, db_ids, db_codes, options["map_topk"])
    seconds = time.perf_counter() - start
    train = json.loads(args.train_metrics.read_text())
    metrics.update(method=params["method"], train_seconds=train["train_seconds"], val_mAP=train["val_mAP"],
                   features=train["features"], train_size=train["train_size"], evaluate_seconds=seconds)
    write_outputs(metrics, scores, db_codes, args.metrics, args.plots)
    print(f"evaluate: mAP {metrics['mAP']:.4f}, mAP@{options['map_topk']} {scores.mAP_at_k:.4f}, "
          f"P@5000 {metrics['P@5000']:.4f}, mAC {metrics['mAC']:.3f} ({seconds:.1f} s)")


def cmd_report(args: argparse.Namespace) -> None:
    """Write reports/report.html (self-contained) and report.md: metrics, curves, heatmap, gallery, params."""
    import json
    import subprocess

    from dsah.config import load_params
    from dsah.data.loading import load_prepared
    from dsah.encode import load_codes
    from dsah.report import build_report, write_report

    params = load_params(args.params)
    data = load_prepared(args.prepared)
    _, query_codes = load_codes(args.codes / "query.npz")
    _, db_codes = load_codes(args.codes / "database.npz")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                                text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    page, md, files = build_report(
        params, json.loads(args.metrics.read_text()), data, args.plots, args.train_log,
        json.loads(args.lae_metrics.read_text()), json.loads(args.validation.read_text()), query_codes, db_codes,
        commit)
    write_report(args.html, args.markdown, args.figures, page, md, files)
    print(f"report: {args.html} ({len(page) // 1024} KiB), {args.markdown}")


def cmd_compare(args: argparse.Namespace) -> None:
    """Tab.1 layout (methods x code lengths, mAP and P@5000) from this repository's DVC experiments."""
    from dsah.compare import collect_runs, write_comparison

    runs = collect_runs(args.repo, args.all_commits, args.experiments or None)
    print(write_comparison(runs, args.markdown, args.csv, args.plot))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsah", description="Deep semantic asymmetric hashing.")
    parser.add_argument("--version", action="version", version=f"dsah {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=handler.__doc__.splitlines()[0], description=handler.__doc__)
        sub.set_defaults(handler=handler)
        sub.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        return sub

    add("prepare", cmd_prepare).add_argument(
        "--out", required=True, help="output folder: split.csv, images.npy, meta.json")
    validate = add("validate", cmd_validate)
    validate.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    validate.add_argument("--out", type=Path, required=True, help="report (JSON, a DVC metric)")
    plan = add("plan", cmd_plan)
    plan.add_argument("--out", type=Path, required=True, help="folder: one <stage>.json per optional stage")
    feats = add("features", cmd_features)
    feats.add_argument("--prepared", type=Path, required=True)
    feats.add_argument("--plan", type=Path, required=True, help="features.json written by plan")
    feats.add_argument("--out", type=Path, required=True, help="folder: database.npy, query.npy, meta.json")
    lae = add("train-lae", cmd_train_lae)
    lae.add_argument("--prepared", type=Path, required=True)
    lae.add_argument("--plan", type=Path, required=True, help="lae.json written by plan")
    lae.add_argument("--model", type=Path, required=True, help="LAE weights (.pt)")
    lae.add_argument("--codes", type=Path, required=True, help="label codes H_Y of the database (.npy)")
    lae.add_argument("--metrics", type=Path, required=True)
    tr = add("train", cmd_train)
    tr.add_argument("--prepared", type=Path, required=True)
    tr.add_argument("--features", type=Path, required=True, help="folder written by features (classic methods)")
    tr.add_argument("--lae", type=Path, required=True, help="LAE weights from train-lae (DSAH)")
    tr.add_argument("--label-codes", type=Path, required=True, help="H_Y from train-lae (DSAH)")
    tr.add_argument("--model", type=Path, required=True, help="the trained network or hash function (.pt)")
    tr.add_argument("--codes", type=Path, required=True, help="database codes B (.npy, int8 +-1)")
    tr.add_argument("--train-log", type=Path, required=True, help="per-iteration loss terms (.csv, a DVC plot)")
    tr.add_argument("--metrics", type=Path, required=True)
    tr.add_argument("--checkpoint", type=Path, required=True, help="resumable state, kept until done")
    enc = add("encode", cmd_encode)
    enc.add_argument("--prepared", type=Path, required=True)
    enc.add_argument("--features", type=Path, required=True, help="folder written by features (classic methods)")
    enc.add_argument("--model", type=Path, required=True, help="model from train")
    enc.add_argument("--database-codes", type=Path, required=True, help="learned database codes B (.npy)")
    enc.add_argument("--out", type=Path, required=True, help="folder: query.npz, database.npz (packed, with ids)")
    idx = add("index", cmd_index)
    idx.add_argument("--prepared", type=Path, required=True)
    idx.add_argument("--codes", type=Path, required=True, help="folder written by encode")
    idx.add_argument("--out", type=Path, required=True, help="index folder")
    for name, handler in (("search", cmd_search), ("add", cmd_add), ("serve", cmd_serve)):
        sub = add(name, handler)
        sub.add_argument("--index", type=Path, default=Path("data/index"), help="index folder (default: data/index)")
        sub.add_argument("--model", type=Path, default=Path("models/model.pt"), help="trained model (encodes images)")
        sub.add_argument("--device", default="auto", help="auto | cpu | cuda")
    search = commands.choices["search"]
    search.add_argument("images", nargs="*", type=Path, help="query image files")
    search.add_argument("--id", nargs="+", help="database ids as queries")
    search.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    search.add_argument("--json", action="store_true", help="machine-readable output")
    adder = commands.choices["add"]
    adder.add_argument("images", nargs="+", type=Path, help="image files to add")
    adder.add_argument("--ids", nargs="+", help="their ids (default: file names without extension)")
    adder.add_argument("--labels", nargs="*", default=[], help="class names all the added images carry")
    server = commands.choices["serve"]
    server.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    server.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    server.add_argument("--max-upload", type=int, default=5 * 1024 * 1024, help="upload limit in bytes")
    rm = add("remove", cmd_remove)
    rm.add_argument("--index", type=Path, default=Path("data/index"))
    rm.add_argument("ids", nargs="+", help="ids to remove")
    ev = add("evaluate", cmd_evaluate)
    ev.add_argument("--prepared", type=Path, required=True)
    ev.add_argument("--codes", type=Path, required=True, help="folder written by encode")
    ev.add_argument("--train-metrics", type=Path, required=True, help="train.json (training seconds)")
    ev.add_argument("--metrics", type=Path, required=True, help="metrics.json (DVC metrics)")
    ev.add_argument("--plots", type=Path, required=True, help="folder for curves (CSV) and the heatmap (PNG)")
    cmp = add("compare", cmd_compare)
    cmp.add_argument("--repo", type=Path, default=Path("."), help="DVC repository (default: here)")
    cmp.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    cmp.add_argument("--markdown", type=Path, default=Path("reports/compare.md"))
    cmp.add_argument("--csv", type=Path, default=Path("reports/compare.csv"), help="one row per run")
    cmp.add_argument("--plot", type=Path, default=Path("reports/compare.svg"),
                     help="mAP by code length (SVG); P@5000 goes beside it as <name>-p5000.svg")
    cmp.add_argument("--experiments", nargs="*", help="only these experiments (default: all)")
    rep = add("report", cmd_report)
    for name, what in (("prepared", "prepared folder"), ("codes", "folder written by encode"),
                       ("metrics", "metrics.json"), ("plots", "folder written by evaluate"),
                       ("train-log", "train_log.csv"), ("lae-metrics", "lae.json"), ("validation", "validation.json"),
                       ("html", "report.html to write"), ("markdown", "report.md to write"),
                       ("figures", "folder for the markdown's figures")):
        rep.add_argument(f"--{name}", type=Path, required=True, help=what)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # to start the same command again (train under torchrun)
    try:
        args.handler(args)
    except DSAHError as exc:  # bad input: a clear message and exit status 2 (1 means "checks failed")
        print(f"dsah {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
