"""DVC stage `prepare`: the dataset chosen in params.yaml -> split table and meta.json (the `images` stage
then decodes the pixels into the image store).

It reads the sources the `sources` stage fingerprinted (and refuses them if they changed since), splits
them by `split_seed` and the image ids only, and writes data/prepared/ in one rename.
"""

import argparse
import json
import time
from pathlib import Path

from dsah.config import load_params
from dsah.data.params import prepare_params
from dsah.data.prepare import prepare, write_prepared
from dsah.errors import exit_on_error


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these)."""
    return prepare_params(params)


@exit_on_error("prepare")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--sources", type=Path, required=True, help="the fingerprint the sources stage wrote")
    parser.add_argument("--out", type=Path, required=True, help="folder: split.csv, meta.json")
    args = parser.parse_args()
    settings = read_params(load_params(args.params))

    start = time.perf_counter()
    prepared = prepare(settings, json.loads(args.sources.read_text())["sources"])
    validation_size = settings.common.validation_size
    write_prepared(prepared, args.out, settings.split_seed, validation_size)
    counts = prepared.meta(settings.split_seed, validation_size)["counts"]
    print(f"prepare: {prepared.dataset} ({prepared.protocol.name}): {counts['queries']} queries, "
          f"{counts['database']} database, {counts['validation']} validation "
          f"in {time.perf_counter() - start:.1f} s -> {args.out}")
    if counts["validation"] < validation_size:
        print(f"prepare: note: validation slice of {counts['validation']}, not prepare.validation_size "
              f"{validation_size}: at most a tenth of the {counts['database']} database images")
    for note in prepared.notes:
        print(f"prepare: note: {note}")


if __name__ == "__main__":
    main()
