"""DVC stage `additions`: the store of what users added to the search index and removed from it.

`dsah add` and `dsah remove` write the store (dsah.search.additions); the `index` stage merges it into every
build. Its output, data/additions, is persistent (`persist: true` in dvc.yaml): DVC never deletes it
before this stage runs, so the stage only starts an empty store where there is none (a fresh clone: no
store means no additions) and checks the one it finds, which DVC then caches and records in dvc.lock
like any output. So users' changes are versioned, pushed and pulled, checked out and carried by
experiments with the rest of the pipeline.
"""

import argparse
from pathlib import Path

from dsah.search.additions import create_store, read_store
from dsah.config import load_params
from dsah.errors import exit_on_error


def read_params(params):
    """Every param this stage reads (dvc.yaml's `params:` lists exactly these): none, the store is data."""
    return None


@exit_on_error("additions")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="the additions store (kept between runs)")
    args = parser.parse_args()
    read_params(load_params(args.params))

    started = not args.out.exists()
    store = create_store(args.out) if started else read_store(args.out)
    print(f"additions: {len(store.added)} added image(s), {len(store.removed)} removed database image(s) in "
          f"{args.out}" + (" (none yet: an empty store, started now)" if started else ""))


if __name__ == "__main__":
    main()
