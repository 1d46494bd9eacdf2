"""Experiments: `dvc exp run -S bits=24`, `dvc exp show`, and the Tab.1 comparison built from them."""

import csv
import io
import sys

import pytest
from conftest import clone_with_outputs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def experiment_clone(pipeline, tmp_path_factory):
    """A git clone of the pipeline run with its outputs pulled, then one experiment at 24 bits."""
    clone = clone_with_outputs(pipeline, tmp_path_factory.mktemp("experiments") / "clone")
    run = pipeline.dvc("exp", "run", "-S", "bits=24", cwd=clone)
    return clone, run.stdout


def test_exp_run_reruns_only_the_stages_bits_touches(experiment_clone):
    _, out = experiment_clone
    assert "Running stage 'prepare'" not in out and "Running stage 'validate'" not in out
    for stage in ("train_lae", "train", "encode", "index", "evaluate", "report"):
        assert f"Running stage '{stage}'" in out
    for stage in ("plan", "features"):  # bits reaches neither
        assert f"Running stage '{stage}'" not in out


def test_exp_show_lists_the_experiment_with_its_metrics(pipeline, experiment_clone):
    clone, _ = experiment_clone
    table = list(csv.DictReader(io.StringIO(pipeline.dvc("exp", "show", "--csv", cwd=clone).stdout)))
    bits_column = next(c for c in table[0] if c.endswith("bits") and "params" in c.lower() or c == "bits")
    experiments = [row for row in table if row["Experiment"] and row["rev"] != "workspace"]
    assert [row[bits_column] for row in experiments] == ["24"]
    row = experiments[0]
    for metric in ("mAP", "P@5000", "mAP@5000", "train_seconds"):
        column = next(c for c in row if c == metric or c.endswith(f":{metric}"))
        assert 0 <= float(row[column]) < 1e6, metric


def test_compare_builds_the_paper_table_from_experiments(pipeline, experiment_clone):
    clone, _ = experiment_clone
    out = pipeline.run(sys.executable, "-m", "dsah.cli", "compare", cwd=clone).stdout
    assert "| method | 12 bits | 24 bits | 36 bits | 48 bits |" in out
    ours = next(line for line in out.splitlines() if line.startswith("| dsah (ours) |"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert cells[1] == "–" and cells[2] != "–" and cells[3] == "–"  # the experiment at 24; the baseline is no run
    assert "| DSAH (paper) | 0.911 | 0.930 | 0.943 | 0.948 |" in out
    runs = list(csv.DictReader(open(clone / "reports" / "compare.csv")))
    assert [int(r["bits"]) for r in runs] == [24]
