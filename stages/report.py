"""DVC stage `report`: reports/report.html (self-contained) and report.md.

Metrics beside the paper's figure, the PR, P@K, loss and validation curves, the bit-correlation heatmap,
a retrieval gallery and the parameters the run used; stand-in datasets and reduced protocols are named.
"""

import argparse
import os
import subprocess
from pathlib import Path

from dsah.codes import load_codes
from dsah.config import CLASSIC_METHODS, LAE_METHODS, load_params
from dsah.data.loading import load_prepared
from dsah.errors import exit_on_error
from dsah.io import read_json
from dsah.evaluation.report import build_report, write_report


def read_params(params):
    """The params the report shows, as dotted key -> value: the top level, then the sections the
    chosen method used (dvc.yaml's `params:` lists exactly these)."""
    shown = {key: params.value(key) for key in ("dataset", "bits", "method", "seed", "split_seed")}
    method = shown["method"]
    sections = ["features"] if method in CLASSIC_METHODS else ["train_imgnet"]
    sections += ["train_lae"] if method in LAE_METHODS else []
    for name in [*sections, f"methods.{method}"]:
        shown.update({f"{name}.{key}": value for key, value in params.tree(name).items()})
    return shown


def current_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


@exit_on_error("report")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    for name, what in (("prepared", "prepared folder"), ("images", "folder written by images (the store)"),
                       ("codes", "folder written by encode"),
                       ("evaluation", "evaluation.json (evaluate's whole record)"),
                       ("plots", "folder written by evaluate"),
                       ("train-metrics", "train.json (the values training used)"),
                       ("training", "the train stage's DVCLive plots/metrics folder"),
                       ("lae-metrics", "lae.json"), ("validation", "validation_checks.json"),
                       ("html", "report.html to write"), ("markdown", "report.md to write"),
                       ("figures", "folder for the markdown's figures")):
        parser.add_argument(f"--{name}", type=Path, required=True, help=what)
    args = parser.parse_args()
    shown = read_params(load_params(args.params))

    data = load_prepared(args.prepared, args.images)
    _, query_codes = load_codes(args.codes / "query.npz")
    _, db_codes = load_codes(args.codes / "database.npz")
    validation = read_json(args.validation, "validate")
    docs = (validation.get("data_docs") or {}).get("latest")  # relative to the checks file
    docs = docs and os.path.relpath(args.validation.parent / docs, args.html.parent)
    page, md, files = build_report(
        shown, read_json(args.evaluation, "evaluate"), data, args.plots, args.training,
        read_json(args.lae_metrics, "train_lae"), validation, query_codes, db_codes, current_commit(), docs,
        read_json(args.train_metrics, "train"))
    write_report(args.html, args.markdown, args.figures, page, md, files)
    print(f"report: {args.html} ({len(page) // 1024} KiB), {args.markdown}")


if __name__ == "__main__":
    main()
