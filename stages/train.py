"""DVC stage `train`: train the chosen method and write its model and the database codes.

Deep methods train a network by the alternating optimization (dsah.training.loop), resuming from the checkpoint
after a kill unless the configuration, the data or the code changed; with train_imgnet.processes > 1 the
stage starts itself data-parallel under torchrun. Classic methods fit a hash function on the features.
The training log goes through DVCLive (rank 0 only), one step per outer iteration.
"""

import time

STARTED = time.perf_counter()  # train_seconds is the stage's whole time: imports, loading, set-up, validation

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dsah.config import CLASSIC_METHODS, LAE_METHODS, load_params
from dsah.data.loading import load_prepared
from dsah.data.protocols import SELECTION
from dsah.training.distributed import launched_by_torchrun, process_group, run_on_this_node
from dsah.errors import ConfigError, DataError, exit_on_error
from dsah.io import atomic_path, file_digest, read_json, save_array, write_json
from dsah.training.lae import load_decoder
from dsah.methods.classic import train_classic
from dsah.provenance import code_digests
from dsah.settings import TrainConfig, method_settings
from dsah.training.loop import TrainData, train


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these)."""
    method = params.value("method", str)
    config = None if method in CLASSIC_METHODS else params.section("train_imgnet", TrainConfig)
    return method, params.value("bits", int), params.value("seed", int), method_settings(params, method), config


def train_on_features(args, method, bits, seed, settings, data):
    features_meta = read_json(args.features / "meta.json", "features")
    if not features_meta.get("used"):
        raise DataError(f"{args.features} holds no features; run the plan and features stages for {method}")
    features = np.load(args.features / "database.npy", allow_pickle=False)
    try:
        result = train_classic(method, settings, bits, features, data.database.labels, data.pool,
                               data.validation, seed, features_meta["description"], SELECTION[data.meta["family"]])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    result.metrics.update(backbone=features_meta["extractor"], input_px=features_meta["size"])
    # The extractor settings go with the model: new images (search, index additions) need them.
    return result, {"kind": "classic", "hash_function": result.hash_function.state(),
                    "features": {k: features_meta[k] for k in ("extractor", "size", "weights", "batch")}}


def live_name(key: str) -> str:
    """A history row's key as a DVCLive metric name: the loss terms under loss/ (the sum as loss/total),
    validation scores under val/, the rest (similar_share, train_seconds) as they are. dvc.yaml plots the
    loss/ and val/ folders (one plot per file) and the report reads loss/total and val/mAP."""
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    if key == "loss":
        return "loss/total"
    return key if key in ("similar_share", "train_seconds") else f"loss/{key}"  # a row's other keys are its loss terms


class TrainingLog:
    """Each history row as one DVCLive step, numbered by its outer iteration: DVCLive appends to
    plots/metrics/<name>.tsv (every loss term, validation score and the seconds) and rewrites its
    metrics.json, a DVC metric so that `dvc exp show` shows a running experiment's progress. That summary
    holds the progress only (the step and its total loss): the terms, scores and seconds of a finished run
    are in the history files, train.json and the headline metrics, and `dvc exp show` leads with the
    headline. No dvc.yaml of its own: dvc.yaml declares these files once. DVCLive clears its folder on
    start; a resumed train() replays the checkpoint's rows first, so the files always hold the whole history."""

    def __init__(self, folder: Path):
        from dvclive import Live  # rank 0 only: the other processes never log

        self.live = Live(str(folder), dvcyaml=None, save_dvc_exp=False)

    def __call__(self, row: dict[str, float]) -> None:
        self.live.step = int(row["iteration"])
        for key, value in row.items():
            if key != "iteration":
                self.live.log_metric(live_name(key), value)
        self.live.summary = {"loss": {"total": row["loss"]}} if "loss" in row else {}  # DVCLive adds the step
        self.live.next_step()

    def end(self) -> None:
        self.live.end()


@exit_on_error("train", interrupted="every finished outer iteration is checkpointed: `dvc repro` resumes")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", type=Path, required=True, help="folder written by prepare")
    parser.add_argument("--images", type=Path, required=True, help="folder written by images (the store)")
    parser.add_argument("--features", type=Path, required=True, help="folder written by features (classic methods)")
    parser.add_argument("--lae", type=Path, required=True, help="LAE weights from train_lae (DSAH)")
    parser.add_argument("--label-codes", type=Path, required=True, help="H_Y from train_lae (DSAH)")
    parser.add_argument("--model", type=Path, required=True, help="the trained network or hash function (.pt)")
    parser.add_argument("--codes", type=Path, required=True, help="database codes B (.npy, int8 +-1)")
    parser.add_argument("--live", type=Path, required=True,
                        help="DVCLive's folder: per-iteration loss terms and validation scores (DVC metrics and plots)")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, required=True, help="resumable state, kept until done")
    args = parser.parse_args()
    method, bits, seed, settings, config = read_params(load_params(args.params))

    if config is not None and config.processes > 1 and not launched_by_torchrun():
        print(f"train: starting {config.processes} processes with torchrun", flush=True)
        run_on_this_node(config.processes, [__file__, *sys.argv[1:]])  # this same command, N times
        return
    data = load_prepared(args.prepared, args.images)
    saved = {"method": method, "settings": asdict(settings), "bits": bits, "dataset": data.meta["dataset"],
             "num_classes": len(data.meta["classes"])}
    if config is None:
        result, description = train_on_features(args, method, bits, seed, settings, data)
        codes = result.codes
        log = TrainingLog(args.live)
        for row in result.history:
            log(row)
    else:
        uses_lae = method in LAE_METHODS
        train_data = TrainData(
            images=data.images(data.database), labels=torch.from_numpy(data.database.labels),
            pool=torch.from_numpy(data.pool), validation=torch.from_numpy(data.validation),
            label_codes=torch.from_numpy(np.load(args.label_codes, allow_pickle=False)) if uses_lae else None,
            decoder=load_decoder(args.lae) if uses_lae else None, selection=SELECTION[data.meta["family"]])
        signature = "/".join(file_digest(p) for p in (args.prepared / "split.csv", args.prepared / "meta.json",
                                                      args.label_codes))
        with process_group(config.device) as world:
            log = TrainingLog(args.live) if world.is_main else None
            result = train(train_data, bits, config, method, seed, settings, checkpoint=args.checkpoint,
                           data_signature=signature, code=code_digests(Path(__file__)), on_iteration=log)
        if not world.is_main:  # rank 0 writes the outputs
            return
        description = {"kind": "network", "network": result.model.spec.to_dict(), "config": asdict(result.config),
                       "state_dict": result.model.state_dict()}
        codes = result.codes.cpu().numpy().astype(np.int8)
    with atomic_path(args.model) as tmp:
        torch.save({**saved, **description}, tmp)
    save_array(codes, args.codes)
    log.end()
    m = result.metrics | stage_seconds(result.metrics)
    write_json(m, args.metrics)
    args.checkpoint.unlink(missing_ok=True)  # finished: nothing is left to resume
    print(f"train: {method} {bits} bits on {m['features']}, validation {m['val_metric']} {m['val_score']:.4f}, "
          f"{m['train_seconds']:.0f} s on {m['device']}")


def stage_seconds(metrics: dict) -> dict[str, float]:
    """train_seconds: everything from this stage's start (imports, loading the images, building the network,
    input statistics, training, validation, checkpoints), plus a resumed run's training in earlier sittings;
    loop_seconds: the training loop's own (network steps and code updates), which images_per_second counts."""
    return {"train_seconds": metrics.get("resumed_seconds", 0.0) + time.perf_counter() - STARTED,
            "loop_seconds": metrics["train_seconds"]}


if __name__ == "__main__":
    main()
