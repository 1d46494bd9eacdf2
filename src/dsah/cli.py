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


def cmd_train_lae(args: argparse.Namespace) -> None:
    """Train the label auto-encoder on the database labels; write it, the label codes and metrics."""
    import numpy as np
    import torch

    from dsah.config import load_params, section
    from dsah.data.loading import load_prepared
    from dsah.data.table import write_json
    from dsah.io import atomic_path
    from dsah.lae import LAEConfig, train_lae

    params = load_params(args.params)
    config = LAEConfig(**section(params, "train_lae", asdict(LAEConfig())))
    data = load_prepared(args.prepared)
    start = time.perf_counter()
    result = train_lae(data.database.labels, params["bits"], config, params["seed"])
    seconds = time.perf_counter() - start
    with atomic_path(args.model) as tmp:
        torch.save({"state_dict": result.model.state_dict(), "config": asdict(config), "bits": params["bits"],
                    "num_classes": data.database.labels.shape[1], "classes": data.meta["classes"]}, tmp)
    with atomic_path(args.codes) as tmp, open(tmp, "wb") as f:
        np.save(f, result.label_codes, allow_pickle=False)
    write_json({**result.metrics, "seconds": seconds, "bits": params["bits"]}, args.metrics)
    m = result.metrics
    print(f"train_lae: {m['distinct_label_vectors']} label vectors -> {m['distinct_codes']} codes, "
          f"reconstruction {m['reconstruction_exact']:.3f}, bit balance {m['bit_balance']:.3f}, "
          f"mAC {m['mAC']:.3f} in {seconds:.1f} s")


def cmd_train_imgnet(args: argparse.Namespace) -> None:
    """Train ImgNet and the database codes by alternating optimization (resumes from a checkpoint)."""
    import numpy as np
    import torch

    from dsah.config import load_params
    from dsah.data.loading import load_prepared
    from dsah.data.table import write_json
    from dsah.io import atomic_path, file_digest
    from dsah.nets.lae import LabelAutoEncoder
    from dsah.train import TrainData, train, train_config, write_log

    params = load_params(args.params)
    config = train_config(params)
    data = load_prepared(args.prepared)
    lae_state = torch.load(args.lae, map_location="cpu", weights_only=True)
    lae = LabelAutoEncoder(lae_state["num_classes"], lae_state["bits"], lae_state["config"]["hidden"])
    lae.load_state_dict(lae_state["state_dict"])
    label_codes = np.load(args.label_codes, allow_pickle=False)
    train_data = TrainData(
        images=data.images(data.database), labels=torch.from_numpy(data.database.labels),
        pool=torch.from_numpy(data.pool), validation=torch.from_numpy(data.validation),
        label_codes=torch.from_numpy(label_codes), decoder=lae.decoder)
    signature = "/".join(file_digest(p) for p in (args.prepared / "split.csv", args.prepared / "meta.json",
                                                  args.label_codes))
    result = train(train_data, params["bits"], config, params["method"], params["seed"],
                   checkpoint=args.checkpoint, data_signature=signature)
    with atomic_path(args.model) as tmp:
        torch.save({"state_dict": result.model.state_dict(), "config": asdict(config), "bits": params["bits"],
                    "method": params["method"], "dataset": data.meta["dataset"],
                    "num_classes": len(data.meta["classes"])}, tmp)
    with atomic_path(args.codes) as tmp, open(tmp, "wb") as f:
        np.save(f, result.codes.cpu().numpy().astype(np.int8), allow_pickle=False)
    write_log(result.history, args.log)
    write_json(result.metrics, args.metrics)
    args.checkpoint.unlink(missing_ok=True)  # finished: a later run with changed code must start afresh
    print(f"train_imgnet: {params['method']} {params['bits']} bits, validation mAP "
          f"{result.metrics['val_mAP']:.4f}, {result.metrics['train_seconds']:.0f} s on {result.metrics['device']}")


def cmd_encode(args: argparse.Namespace) -> None:
    """Encode the queries with ImgNet; database codes are the learned B (or, as an option, ImgNet's)."""
    import numpy as np

    from dsah.config import load_params, section
    from dsah.data.loading import load_prepared
    from dsah.encode import load_imgnet, save_codes
    from dsah.train import encode, select_device

    params = load_params(args.params)
    options = section(params, "encode", {"database": "learned", "device": "auto"})
    if options["database"] not in ("learned", "network"):
        raise ConfigError(f"encode.database: {options['database']!r}; choose learned or network")
    device = select_device(options["device"])
    data = load_prepared(args.prepared)
    model, _ = load_imgnet(args.model, device)
    start = time.perf_counter()
    query_codes = encode(model, data.images(data.query), device).cpu().numpy().astype(np.int8)
    if options["database"] == "learned":
        db_codes = np.load(args.database_codes, allow_pickle=False)
    else:  # what images added later get: sign(F(x))
        db_codes = encode(model, data.images(data.database), device).cpu().numpy().astype(np.int8)
    args.out.mkdir(parents=True, exist_ok=True)
    save_codes(args.out / "query.npz", data.query.ids, query_codes)
    save_codes(args.out / "database.npz", data.database.ids, db_codes)
    print(f"encode: {len(query_codes)} queries ({time.perf_counter() - start:.1f} s), "
          f"{len(db_codes)} database codes ({options['database']}) -> {args.out}")


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
                   evaluate_seconds=seconds)
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

    runs = collect_runs(args.repo, args.all_commits)
    print(write_comparison(runs, args.markdown, args.csv))


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
    lae = add("train-lae", cmd_train_lae)
    lae.add_argument("--prepared", type=Path, required=True)
    lae.add_argument("--model", type=Path, required=True, help="LAE weights (.pt)")
    lae.add_argument("--codes", type=Path, required=True, help="label codes H_Y of the database (.npy)")
    lae.add_argument("--metrics", type=Path, required=True)
    imgnet = add("train-imgnet", cmd_train_imgnet)
    imgnet.add_argument("--prepared", type=Path, required=True)
    imgnet.add_argument("--lae", type=Path, required=True, help="LAE weights from train-lae")
    imgnet.add_argument("--label-codes", type=Path, required=True, help="H_Y from train-lae")
    imgnet.add_argument("--model", type=Path, required=True, help="ImgNet weights (.pt)")
    imgnet.add_argument("--codes", type=Path, required=True, help="database codes B (.npy, int8 +-1)")
    imgnet.add_argument("--log", type=Path, required=True, help="per-iteration loss terms (.csv, a DVC plot)")
    imgnet.add_argument("--metrics", type=Path, required=True)
    imgnet.add_argument("--checkpoint", type=Path, required=True, help="resumable state, kept until done")
    enc = add("encode", cmd_encode)
    enc.add_argument("--prepared", type=Path, required=True)
    enc.add_argument("--model", type=Path, required=True, help="ImgNet weights from train-imgnet")
    enc.add_argument("--database-codes", type=Path, required=True, help="learned database codes B (.npy)")
    enc.add_argument("--out", type=Path, required=True, help="folder: query.npz, database.npz (packed, with ids)")
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
    rep = add("report", cmd_report)
    for name, what in (("prepared", "prepared folder"), ("codes", "folder written by encode"),
                       ("metrics", "metrics.json"), ("plots", "folder written by evaluate"),
                       ("train-log", "train_log.csv"), ("lae-metrics", "lae.json"), ("validation", "validation.json"),
                       ("html", "report.html to write"), ("markdown", "report.md to write"),
                       ("figures", "folder for the markdown's figures")):
        rep.add_argument(f"--{name}", type=Path, required=True, help=what)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except DSAHError as exc:  # bad input: a clear message and exit status 2 (1 means "checks failed")
        print(f"dsah {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
