"""Benchmark: how good DSAH's label codes H_Y are as codes, from labels alone (no image, no network; seconds
per run). The label auto-encoder trains on a protocol's database labels, as the train_lae stage does; then:

- oracle: query codes are the label codes of the queries' own labels (what a perfect network would give)
  against the database's label codes: tie-aware mAP, NDCG@1000 and ACG@1000, beside chance mAP;
- perturbed: each query's labels replaced, with the chance `--error` (the network's error rate, e.g. one
  minus a run's query_pattern_accuracy), by another database image's labels, as a network that mistakes
  the image would give;
- flipped: each of a query's C labels flipped with chance `--label-errors` / C (a query left with none gets
  one at random), a network wrong label by label: the measured rate is evaluate's query_label_errors;
- one label apart: the Hamming distance between the codes of database label vectors that differ in exactly
  one label (mean, and the share at distance 0: two label vectors the codes cannot tell apart).

For the real label tables (COCO, the NUS-WIDE-21 lists) and the cifar10-scenes stand-in (params.yaml's
setting), at each code length, seed and targets setting (binary, graded). Writes JSON and a Markdown table.

    DSAH_DATA_HOME=../shared/data python bench/label_codes.py --out bench/results/multilabel_claim_cpu/label_codes.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import PARAMS, project_config, write_result  # noqa: E402

from dsah.data.cifar10 import locate_cifar10  # noqa: E402
from dsah.data.coco import locate_coco, prepare_coco  # noqa: E402
from dsah.data.nuswide import locate_nuswide, prepare_nuswide  # noqa: E402
from dsah.data.params import ScenesSource  # noqa: E402
from dsah.data.protocols import PROTOCOLS, scenes_protocol  # noqa: E402
from dsah.data.scenes import prepare_scenes  # noqa: E402
from dsah.evaluation.markdown import markdown_table  # noqa: E402
from dsah.evaluation.metrics import chance_map, evaluate_retrieval  # noqa: E402
from dsah.methods.classic import sign  # noqa: E402
from dsah.settings import TARGETS, LAEConfig  # noqa: E402
from dsah.training.lae import train_lae  # noqa: E402


def protocols(names: list[str], scenes_size: tuple[int, int] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (query labels, database labels), float32."""
    found = {}
    for name in names:
        if name == "coco":
            source = locate_coco("", "", download=False)
            prepared = prepare_coco(PROTOCOLS["coco"], source["labels"], None, 0)
        elif name == "nuswide21-reduced":
            prepared = prepare_nuswide(locate_nuswide("", "")["labels"], None, 0)
        else:
            own = PARAMS.section("prepare.cifar10-scenes", ScenesSource)
            queries, database = scenes_size or (own.queries, own.database)
            prepared = prepare_scenes(scenes_protocol(queries, database),
                                      locate_cifar10(own.archive), 0, own.grid, own.objects, own.zipf)
        labels = prepared.labels.astype(np.float32)
        found[name] = (labels[prepared.query], labels[~prepared.query])
    return found


def perturbed(labels: np.ndarray, pool: np.ndarray, error: float, rng: np.random.Generator) -> np.ndarray:
    """`labels` with each row replaced, with chance `error`, by a pool row whose labels differ from it."""
    out = labels.copy()
    for i in np.flatnonzero(rng.random(len(labels)) < error):
        while (candidate := pool[rng.integers(len(pool))]).tolist() == labels[i].tolist():
            pass
        out[i] = candidate
    return out


def flipped(labels: np.ndarray, errors: float, rng: np.random.Generator) -> np.ndarray:
    """`labels` with each label flipped with chance errors / C: `errors` wrong labels per row on average."""
    out = np.where(rng.random(labels.shape) < errors / labels.shape[1], 1 - labels, labels)
    for i in np.flatnonzero(out.sum(axis=1) == 0):  # no image is without a label
        out[i, rng.integers(labels.shape[1])] = 1
    return out


def one_label_apart(patterns: np.ndarray, codes: np.ndarray) -> tuple[float, float, int]:
    """Over pairs of distinct label vectors differing in exactly one label: the mean Hamming distance of
    their codes, the share of pairs at distance 0, and the number of pairs."""
    index = {row.tobytes(): k for k, row in enumerate(patterns)}
    distances = []
    for k, row in enumerate(patterns):
        for label in np.flatnonzero(row == 0):  # add one label: each pair is found once, from its smaller side
            other = row.copy()
            other[label] = 1
            j = index.get(other.tobytes())
            if j is not None:
                distances.append(int((codes[k] != codes[j]).sum()))
    if not distances:
        return float("nan"), float("nan"), 0
    values = np.array(distances)
    return float(values.mean()), float((values == 0).mean()), len(values)


def codes_of(model, labels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return sign(model.encode(torch.as_tensor(labels)).numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--protocols", nargs="+", default=["cifar10-scenes", "coco", "nuswide21-reduced"])
    parser.add_argument("--bits", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--error", type=float, nargs="+", default=[0.25],
                        help="chances that a query's labels are mistaken for another image's")
    parser.add_argument("--label-errors", type=float, nargs="+", default=[0.5, 1.0],
                        help="wrong labels per query, label by label (evaluate's query_label_errors)")
    parser.add_argument("--steps", type=int, help="LAE steps (default: params.yaml's train_lae.steps)")
    parser.add_argument("--scenes-size", type=int, nargs=2, metavar=("QUERIES", "DATABASE"),
                        help="a smaller cifar10-scenes build (default: params.yaml's)")
    args = parser.parse_args()
    config = project_config("train_lae", LAEConfig, **({"steps": args.steps} if args.steps else {}))
    rows = []
    for name, (query, database) in protocols(args.protocols, args.scenes_size).items():
        chance = chance_map(query, database)
        patterns = np.unique(database, axis=0)
        for bits in args.bits:
            for targets in args.targets:
                for seed in args.seeds:
                    start = time.perf_counter()
                    lae = train_lae(database, bits, config, seed, progress=False, targets=targets)
                    seconds = time.perf_counter() - start
                    db_codes = lae.label_codes.astype(np.float32)
                    row = {"protocol": name, "bits": bits, "targets": targets, "seed": seed, "chance_mAP": chance,
                           "lae_seconds": seconds, "reconstruction_exact": lae.metrics["reconstruction_exact"],
                           "distinct_codes": lae.metrics["distinct_codes"],
                           "label_vectors": lae.metrics["distinct_label_vectors"]}
                    oracle = evaluate_retrieval(codes_of(lae.model, query), db_codes, query, database, ks=())
                    row.update(oracle_mAP=oracle.mAP, oracle_NDCG=oracle.ndcg_at_k, oracle_ACG=oracle.acg_at_k)
                    rng = np.random.default_rng([seed, 17])
                    for error in args.error:
                        mistaken = perturbed(query, database, error, rng)
                        scores = evaluate_retrieval(codes_of(lae.model, mistaken), db_codes, query, database, ks=())
                        row[f"perturbed_{error:g}_mAP"] = scores.mAP
                        row[f"perturbed_{error:g}_NDCG"] = scores.ndcg_at_k
                    for errors in args.label_errors:
                        scores = evaluate_retrieval(codes_of(lae.model, flipped(query, errors, rng)), db_codes, query,
                                                    database, ks=())
                        row[f"flipped_{errors:g}_mAP"] = scores.mAP
                        row[f"flipped_{errors:g}_NDCG"] = scores.ndcg_at_k
                    mean, collided, pairs = one_label_apart(patterns, codes_of(lae.model, patterns))
                    row.update(one_label_apart_hamming=mean, one_label_apart_same_code=collided,
                               one_label_apart_pairs=pairs)
                    rows.append(row)
                    print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
    write_result(args.out, {"benchmark": "label_codes", "errors": args.error, "label_errors": args.label_errors,
                            "lae": config.__dict__, "rows": rows})
    args.out.with_suffix(".md").write_text(markdown(rows, args.error, args.label_errors))


def markdown(rows: list[dict], errors: list[float], label_errors: list[float]) -> str:
    """Means over seeds (± sd) per protocol, length and targets setting."""
    import pandas as pd

    table = pd.DataFrame(rows)
    columns = ["chance_mAP", "reconstruction_exact", "oracle_mAP", "oracle_NDCG",
               *[f"perturbed_{e:g}_mAP" for e in errors], *[f"flipped_{e:g}_mAP" for e in label_errors],
               "one_label_apart_hamming", "one_label_apart_same_code"]
    cells = [[protocol, bits, targets, len(group),
              *(f"{group[c].mean():.3f} ± {group[c].std(ddof=1):.3f}" if len(group) > 1 else f"{group[c].mean():.3f}"
                for c in columns)]
             for (protocol, bits, targets), group in table.groupby(["protocol", "bits", "targets"], sort=False)]
    return markdown_table(["protocol", "bits", "targets", "seeds", *columns], cells) + "\n"


if __name__ == "__main__":
    main()
