"""Benchmark: DSAH and ADSH on multi-label pixels, from scratch and with the pretrained EfficientNet-Lite0.
Writes JSON (after every run, so an interrupted benchmark keeps what it measured) and a Markdown table.

The data is a prepared protocol with its image store, built here by the project's own stage scripts
(sources, prepare, images) from params.yaml with `dataset` changed: by default the cifar10-mosaic stand-in
(multi-label 2x2 mosaics of CIFAR-10 at 64 px; a stand-in, not COCO). Every run trains on the same image
budget (outer_iters x samples x epochs), so the training seconds say what each backbone costs; the rest of
train_imgnet comes from params.yaml. Database codes are the learned B, query codes sign(F(x)).

    DSAH_DATA_HOME=../shared/data python bench/multilabel.py --out bench/results/multilabel_cpu.json
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import PARAMS, project_config, write_result  # noqa: E402

from dsah.config import LAE_METHODS  # noqa: E402
from dsah.data.loading import load_prepared  # noqa: E402
from dsah.data.protocols import SELECTION  # noqa: E402
from dsah.device import select_device  # noqa: E402
from dsah.training.encode import encode  # noqa: E402
from dsah.evaluation.evaluate import evaluate  # noqa: E402
from dsah.training.lae import train_lae  # noqa: E402
from dsah.settings import DSAH_TARGETS, LAEConfig, TrainConfig  # noqa: E402
from dsah.settings import method_settings  # noqa: E402
from dsah.similarity import share_a_label  # noqa: E402
from dsah.training.loop import TrainData, train

ROOT = Path(__file__).resolve().parents[1]
# name -> train_imgnet changes: the from-scratch ResNet and the pretrained Lite0 (its trunk at a tenth of
# the hash layer's learning rate), both fed the store's own pixels (input_size = store size).
BACKBONES = {"scratch": {"backbone": "cifar_resnet", "trunk_lr": 1.0},
             "lite0": {"backbone": "efficientnet_lite0", "trunk_lr": 0.1}}


def prepare(dataset: str, work: Path, changes: list[str]) -> tuple[Path, Path]:
    """The protocol's split and image store, written by the project's stage scripts into `work` from
    params.yaml with `dataset` and the KEY=VALUE changes (as `dvc exp run -S` takes them) applied."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["dataset"] = dataset
    for change in changes:
        key, _, value = change.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise SystemExit(f"--set {change}: params.yaml has no key {key}")
        node[leaf] = yaml.safe_load(value)
    text = yaml.safe_dump(params, sort_keys=False)
    work = work / hashlib.sha256(text.encode()).hexdigest()[:12]  # other params: another build
    work.mkdir(parents=True, exist_ok=True)
    params_file = work / "params.yaml"
    params_file.write_text(text)
    sources, prepared, images = work / "sources.json", work / "prepared", work / "images"
    for stage, args in (("sources", ["--out", sources]),
                        ("prepare", ["--sources", sources, "--out", prepared]),
                        ("images", ["--prepared", prepared, "--sources", sources, "--out", images,
                                    "--work", work / ".images-work"])):
        if not (prepared / "meta.json").exists() or stage == "images" and not (images / "store.json").exists():
            subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py"), "--params", str(params_file),
                            *map(str, args)], check=True)
    return prepared, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10-mosaic", help="a multi-label dataset of params.yaml")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "dsah-bench-multilabel",
                        help="where the split and the store are built (kept for reruns, one folder per params)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a params.yaml change for the data, e.g. prepare.cifar10-mosaic.database=2000")
    parser.add_argument("--methods", nargs="+", default=["dsah", "adsh"])
    parser.add_argument("--bits", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument("--width", type=int, default=0, help="cifar_resnet width; 0: params.yaml's")
    parser.add_argument("--outer-iters", type=int, default=8)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--input-size", type=int, default=0, help="px the backbones see; 0: the store's size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--budget-seconds", type=float, default=600, help="the stated limit per run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    data = load_prepared(*prepare(args.dataset, args.work, args.set))
    meta = data.meta
    size = args.input_size or meta["image_size"]
    selection = SELECTION[meta["family"]]
    topk = PARAMS.value("evaluate.map_topk", int)
    device = select_device(args.device, key="--device")
    database = torch.from_numpy(data.database.labels)
    # The mAP of a random ranking: the share of the database relevant to a query (>= 1 shared label).
    chance = float(share_a_label(torch.from_numpy(data.query.labels), database).float().mean())
    runs = []
    description = {"benchmark": "DSAH and ADSH on multi-label pixels, from scratch and pretrained",
                   "protocol": meta["protocol"], "stand_in": meta.get("stand_in", False),
                   "data_changes": args.set, "database": len(data.database.table), "queries": len(data.query.table),
                   "image_size": meta["image_size"], "input_size": size, "chance_mAP": chance,
                   "budget": {"outer_iters": args.outer_iters, "samples": args.samples, "epochs": args.epochs,
                              "images_seen": args.outer_iters * args.samples * args.epochs,
                              "limit_seconds": args.budget_seconds}}
    for bits in args.bits:
        lae = train_lae(data.database.labels, bits, PARAMS.section("train_lae", LAEConfig), seed=0, progress=False,
                        targets=PARAMS.value(DSAH_TARGETS, str))
        for backbone in args.backbones:
            for method in args.methods:
                width = {"width": args.width} if args.width else {}
                config = project_config("train_imgnet", TrainConfig, **BACKBONES[backbone], **width, input_size=size,
                                        outer_iters=args.outer_iters, samples=args.samples, epochs=args.epochs,
                                        device=args.device)
                uses_lae = method in LAE_METHODS
                train_data = TrainData(images=data.images(data.database), labels=database,
                                       pool=torch.from_numpy(data.pool), validation=torch.from_numpy(data.validation),
                                       label_codes=torch.from_numpy(lae.label_codes) if uses_lae else None,
                                       decoder=lae.model.decoder if uses_lae else None, selection=selection)
                start = time.perf_counter()
                result = train(train_data, bits, config, method, 0, method_settings(PARAMS, method), progress=False)
                wall = time.perf_counter() - start
                query = encode(result.model.to(device), data.images(data.query), device).cpu().numpy()
                metrics, _ = evaluate(data, data.query.ids, query.astype(np.int8), data.database.ids,
                                      result.codes.cpu().numpy().astype(np.int8), topk)
                m = result.metrics
                runs.append({"method": method, "bits": bits, "backbone": backbone, "network": config.backbone,
                             "trunk_lr": config.trunk_lr, "mAP": metrics["mAP"], f"mAP@{topk}": metrics[f"mAP@{topk}"],
                             "train_seconds": m["train_seconds"], "run_seconds": wall,
                             "within_budget": wall <= args.budget_seconds, "val_metric": m["val_metric"],
                             "val_score": m["val_score"], "device": m["device"]})
                print(f"{method} {bits} bits {backbone}: mAP {metrics['mAP']:.4f}, mAP@{topk} "
                      f"{metrics[f'mAP@{topk}']:.4f}, {m['train_seconds']:.0f} s", flush=True)
                write_result(args.out, {**description, "runs": runs})
    table = ["| method | bits | network | mAP | mAP@%d | training s |" % topk, "|---|---|---|---|---|---|"]
    table += [f"| {r['method'].upper()} | {r['bits']} | {r['backbone']} ({r['network']}) | {r['mAP']:.4f} | "
              f"{r[f'mAP@{topk}']:.4f} | {r['train_seconds']:.0f} |" for r in runs]
    table.append(f"\nA random ranking scores mAP {chance:.4f} on {meta['protocol']} (the share of relevant items).")
    args.out.with_suffix(".md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
