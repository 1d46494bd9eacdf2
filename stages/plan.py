"""DVC stage `plan`: check every param the chosen method reads, and write which optional stages it uses.

Each optional stage (features, train_lae) depends on its own plan file, whose content changes only when
that stage's use changes: switching between two methods that both use (or both skip) a stage leaves it
as it was, and a skipped stage only writes a marker. Bad params fail here, before any work.
"""

import argparse
from pathlib import Path

from dsah.config import CLASSIC_METHODS, LAE_METHODS, load_params
from dsah.errors import exit_on_error
from dsah.io import write_json
from dsah.settings import FeaturesConfig, LAEConfig, TrainConfig, method_settings


def read_params(params):
    """Every param the chosen method reads, checked (dvc.yaml's `params:` lists exactly these)."""
    method = params.value("method", str)
    method_settings(params, method)
    if method in CLASSIC_METHODS:
        params.section("features", FeaturesConfig)
    else:
        params.section("train_imgnet", TrainConfig)
    if method in LAE_METHODS:
        params.section("train_lae", LAEConfig)
    return method


@exit_on_error("plan")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder: one <stage>.json per optional stage")
    args = parser.parse_args()
    method = read_params(load_params(args.params))

    uses = {"features": method in CLASSIC_METHODS, "lae": method in LAE_METHODS}
    for stage, used in uses.items():
        write_json({"used": used}, args.out / f"{stage}.json")
    print(f"plan: {method} uses " + ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in uses.items()))


if __name__ == "__main__":
    main()
