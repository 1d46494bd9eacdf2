"""DVC stage `sources`: find the dataset's source files and write their fingerprint.

It always runs (about a second): DVC cannot see $DSAH_DATA_HOME or the download cache, so this stage
looks where `prepare` will look and writes what it finds as content checksums, with no paths or dates.
A changed archive, label file or image folder changes the fingerprint and reruns `prepare`; the same
data at another path, or on another machine, changes nothing.

Being first, it also checks the whole of params.yaml (dsah.schema): a wrong value anywhere stops the
pipeline here, before DVC deletes any later stage's outputs to rerun it. Its own output is `persist` in
dvc.yaml, so a refused params.yaml leaves it as it was too.
"""

import argparse
import json
import time
from pathlib import Path

from dsah.config import load_params
from dsah.data.params import source_params
from dsah.data.prepare import find_sources
from dsah.data.sources import fingerprint
from dsah.errors import exit_on_error
from dsah.io import write_json
from dsah.schema import check_params


def read_params(params):
    """The whole file, checked (dvc.yaml: params.yaml is a dep of this stage), then what it uses of it."""
    check_params(params)
    return source_params(params)


@exit_on_error("sources")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the fingerprint (JSON)")
    args = parser.parse_args()
    dataset, download, own = read_params(load_params(args.params))  # the whole file, before anything is written

    start = time.perf_counter()
    found = find_sources(dataset, own, download)
    sources = {"dataset": dataset, "sources": fingerprint(found)}
    write_json(sources, args.out)
    for role, source in found.items():
        where = "not found" if source is None else f"{source.path} ({source.origin})"
        print(f"sources: {role}: {where}")
    print(f"sources: fingerprint {json.dumps(sources, sort_keys=True)[:120]}... "
          f"in {time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
