"""Benchmark: mAP against training seconds for training recipes, in one interleaved run. Writes one JSON.

Each recipe is a set of overrides of params.yaml's train_imgnet and methods.<method> sections; "today" is
the recipe the defaults had before issue 21 (written out here, so later defaults never change it) and
"default" is params.yaml as it is now. A budget scales a recipe's outer iterations (0.5: half of them),
so every recipe is measured at several training times. Runs are interleaved (seed by seed, budget by
budget, recipe by recipe) so that a machine's slow spell hits every recipe alike.

    PYTHONPATH=src python bench/frontier.py --archive ../shared/data/cifar10-jpg.tar.xz \\
        --out bench/results/frontier_cpu.json --bits 12 48 --budgets 0.5 1 2 --seeds 0 1 2
    PYTHONPATH=src python bench/frontier.py ... --recipe wide:width=24,samples=6000   # ad-hoc recipes
    python bench/frontier_check.py bench/results/frontier_cpu.json     # medians and ratios
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import PARAMS, machine, project_config, write_result  # noqa: E402
from gpu_train import load_cifar, parse_value, run_one  # noqa: E402

from dsah.device import select_device  # noqa: E402
from dsah.settings import method_settings  # noqa: E402
from dsah.settings import FROM_SCRATCH, TrainConfig  # noqa: E402

# The 2-core default before issue 21's recipe work (commit c387f0c), spelled out.
TODAY = dict(FROM_SCRATCH, width=16, outer_iters=20, samples=8000, epochs=1, batch=128, lr=0.003,
             weight_decay=0.0005, warmup=0.05, augment=True, channels_last=True, optimizer="adam", test_flips=False)
RECIPES: dict[str, dict] = {"today": TODAY, "default": {}}


def parse_recipe(text: str) -> tuple[str, dict]:
    """name:key=value,key=value (a recipe on top of params.yaml's defaults)."""
    name, _, pairs = text.partition(":")
    return name, {k: parse_value(v) for k, v in (p.split("=", 1) for p in pairs.split(",") if p)}


def configure(overrides: dict, budget: float, method: str, eval_every: int) -> tuple[TrainConfig, object]:
    loop_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    loop = {k: v for k, v in overrides.items() if k in loop_keys}
    outer = loop.get("outer_iters", PARAMS.section("train_imgnet", TrainConfig).outer_iters)
    loop["outer_iters"] = max(1, round(outer * budget))
    config = project_config("train_imgnet", TrainConfig, **{**loop, "eval_every": eval_every})
    own = method_settings(PARAMS, method)
    return config, dataclasses.replace(own, **{k: v for k, v in overrides.items() if hasattr(own, k)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", required=True, help="CIFAR-10 archive (python or image-folder format)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--bits", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                        help="multiples of each recipe's outer iterations")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--recipes", nargs="*", default=["today", "default"], help=f"of {sorted(RECIPES)}")
    parser.add_argument("--recipe", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="an ad-hoc recipe on top of params.yaml (repeatable)")
    parser.add_argument("--methods", nargs="+", default=["dsah"],
                        help="each recipe is run for every method in turn (interleaved: a slow spell hits all)")
    parser.add_argument("--validation-only", action="store_true",
                        help="score the validation slice only (choosing settings): queries are never touched")
    parser.add_argument("--queries-per-class", type=int, default=100)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=0, help="validation during training (0: only at the end)")
    args = parser.parse_args()

    recipes = {name: RECIPES[name] for name in args.recipes}
    recipes.update(parse_recipe(text) for text in args.recipe)
    device = select_device(project_config("train_imgnet", TrainConfig).device)
    start = time.perf_counter()
    cifar = load_cifar(Path(args.archive), device, args.queries_per_class, args.validation)
    load_seconds = time.perf_counter() - start
    runs = []
    for seed in args.seeds:
        for bits in args.bits:
            for budget in args.budgets:
                for name, overrides in recipes.items():
                    for method in args.methods:
                        config, settings = configure(overrides, budget, method, args.eval_every)
                        row = run_one(cifar, bits, method, seed, config, settings, device,
                                      score_queries=not args.validation_only)
                        runs.append({"recipe": name, "budget": budget, "outer_iters": config.outer_iters, **row})
                        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in runs[-1].items()
                               if k in ("recipe", "method", "budget", "bits", "seed", "mAP", "val_mAP",
                                        "train_seconds", "images_per_second")}, flush=True)
                        write_result(args.out, {
                            "benchmark": "cifar10_frontier", "protocol": "ADSH: 1,000 queries (100/class), 59,000 "
                            "database; validation slice of 1,000 database images", "methods": args.methods,
                            "scored": "validation slice only" if args.validation_only else "validation and queries",
                            "archive": Path(args.archive).name, "recipes": recipes, "load_seconds": load_seconds,
                            "runs": runs, "device_name": machine()["device"]})


if __name__ == "__main__":
    main()
