"""Benchmark: how far apart a multi-label protocol lets methods be. For each protocol, from its labels
only (seconds, no image, no training): the chance mAP (the exact expected mAP of a ranking that knows
nothing, dsah.evaluation.metrics.chance_map) and the label statistics. Real label tables (COCO, the
NUS-WIDE-21 lists, CIFAR-10) beside the two CIFAR-10 stand-ins, the cifar10-scenes one at every candidate
setting of a small grid: its committed setting (params.yaml) was chosen from this table alone, before any
method ran on it. Writes JSON and a Markdown table beside it (.md).

    DSAH_DATA_HOME=../shared/data python bench/chance.py --out bench/results/multilabel_claim_cpu/chance.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import PARAMS, write_result  # noqa: E402

from dsah.data.cifar10 import locate_cifar10, prepare_cifar10  # noqa: E402
from dsah.data.coco import locate_coco, prepare_coco  # noqa: E402
from dsah.data.mosaic import prepare_mosaic  # noqa: E402
from dsah.data.nuswide import locate_nuswide, prepare_nuswide  # noqa: E402
from dsah.data.params import MosaicSource, ScenesSource  # noqa: E402
from dsah.data.protocols import PROTOCOLS, mosaic_protocol, scenes_protocol  # noqa: E402
from dsah.data.scenes import prepare_scenes  # noqa: E402
from dsah.evaluation.markdown import markdown_table  # noqa: E402
from dsah.evaluation.metrics import chance_map  # noqa: E402

# The candidates for cifar10-scenes: the chance of 1..4 objects on a 2 x 2 grid, and the class tail.
OBJECTS = {"1-2": [0.6, 0.4], "1-4 falling": [0.5, 0.3, 0.15, 0.05], "1-4 flatter": [0.4, 0.3, 0.2, 0.1],
           "1-4 even": [0.25, 0.25, 0.25, 0.25]}
ZIPF = (0.0, 0.5, 1.0, 1.5)


def statistics(name: str, prepared, **setting) -> dict:
    """Chance mAP and label statistics of a prepared protocol (queries against the database)."""
    labels, query = prepared.labels.astype(np.float32), prepared.query
    per_image = labels.sum(axis=1)
    frequency = labels[~query].mean(axis=0)
    return {"protocol": name, **setting, "queries": int(query.sum()), "database": int((~query).sum()),
            "chance_mAP": chance_map(labels[query], labels[~query]),
            "labels_mean": float(per_image.mean()), "labels_max": int(per_image.max()),
            "single_label_share": float((per_image == 1).mean()),
            "head_class_share": float(frequency.max()), "tail_class_share": float(frequency.min()),
            "label_patterns": int(len(np.unique(labels[~query], axis=0)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = []
    coco = locate_coco("", "", download=False)
    rows.append(statistics("coco (label table)", prepare_coco(PROTOCOLS["coco"], coco["labels"], None, 0)))
    nuswide = locate_nuswide("", "")
    rows.append(statistics("nuswide21-reduced (lists)", prepare_nuswide(nuswide["labels"], None, 0)))
    archive = locate_cifar10(PARAMS.value("prepare.cifar10.archive", str))
    rows.append(statistics("cifar10", prepare_cifar10(PROTOCOLS["cifar10"], archive, 0)))
    mosaic = PARAMS.section("prepare.cifar10-mosaic", MosaicSource)
    rows.append(statistics("cifar10-mosaic (stand-in)", prepare_mosaic(
        mosaic_protocol(mosaic.queries, mosaic.database, mosaic.grid), archive, 0, mosaic.grid), grid=mosaic.grid))
    scenes = PARAMS.section("prepare.cifar10-scenes", ScenesSource)
    protocol = scenes_protocol(scenes.queries, scenes.database)
    for (label, objects), zipf in itertools.product(OBJECTS.items(), ZIPF):
        rows.append(statistics("cifar10-scenes (stand-in)", prepare_scenes(protocol, archive, 0, 2, objects, zipf),
                               grid=2, objects=label, zipf=zipf,
                               committed=objects == list(scenes.objects) and zipf == scenes.zipf))
        print(rows[-1])
    write_result(args.out, {"rows": rows, "split_seed": 0})
    args.out.with_suffix(".md").write_text(markdown(rows))


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table, the committed scenes setting in bold."""
    columns = ["protocol", "objects: chances of 1, 2, ...", "zipf", "chance mAP", "labels per image",
               "single-label share", "head class", "tail class", "label patterns"]
    cells = [[f"**{r['protocol']}, committed**" if r.get("committed") else r["protocol"],
              ", ".join(f"{x:g}" for x in OBJECTS[r["objects"]]) if "objects" in r else "", r.get("zipf", ""),
              f"{r['chance_mAP']:.3f}", f"{r['labels_mean']:.2f}", f"{r['single_label_share']:.2f}",
              f"{r['head_class_share']:.3f}", f"{r['tail_class_share']:.3f}", f"{r['label_patterns']:,}"]
             for r in rows]
    return markdown_table(columns, cells) + "\n"


if __name__ == "__main__":
    main()
