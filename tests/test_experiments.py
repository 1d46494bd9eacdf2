"""Experiments: `dvc exp run -S bits=24`, `dvc exp show`, and the Tab.1 comparison built from them."""

import csv
import io
import json
import subprocess
import sys
import time

import pytest
from PIL import Image
from conftest import clone_with_outputs
from fixtures import has_row, table_rows

pytestmark = pytest.mark.integration


def running_steps(shown: list) -> list[tuple[int, float]]:
    """(step, total loss) of DVCLive's summary, as `dvc exp show --json` reports it for experiments it
    marks as running."""
    steps = []
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            if (experiment.get("executor") or {}).get("state") == "running":
                metrics = (experiment["revs"][0].get("data") or {}).get("metrics") or {}
                live = (metrics.get("reports/live/metrics.json") or {}).get("data") or {}
                steps += [(live["step"], live.get("loss", {}).get("total"))] if "step" in live else []
    return steps


@pytest.fixture(scope="module")
def experiment_clone(pipeline, tmp_path_factory):
    """A git clone of the pipeline run with its outputs pulled, then one experiment at 24 bits; while it
    runs, `dvc exp show` is asked what it sees (the DVCLive steps of running experiments)."""
    folder = tmp_path_factory.mktemp("experiments")
    clone = clone_with_outputs(pipeline, folder / "clone")
    with open(folder / "exp-run.log", "w+") as log:  # a file: a pipe left unread could fill and stall the run
        run = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run", "-S", "bits=24"], cwd=clone,
                               env=pipeline.env, stdout=log, stderr=subprocess.STDOUT, text=True)
        seen = []
        while run.poll() is None:
            shown = pipeline.dvc("exp", "show", "--json", cwd=clone, check=False)
            if shown.returncode == 0 and shown.stdout.strip():  # it may catch a file half written
                seen += running_steps(json.loads(shown.stdout))
            time.sleep(1)
        log.seek(0)
        out = log.read()
    assert run.returncode == 0, out
    return clone, out, seen


def test_exp_run_reruns_only_the_stages_bits_touches(experiment_clone):
    _, out, _ = experiment_clone
    assert "Running stage 'prepare'" not in out and "Running stage 'validate'" not in out
    for stage in ("train_lae", "train", "encode", "index", "evaluate", "report"):
        assert f"Running stage '{stage}'" in out
    for stage in ("plan", "features"):  # bits reaches neither
        assert f"Running stage '{stage}'" not in out


def test_exp_show_shows_the_running_experiments_latest_training_step(pipeline, experiment_clone):
    _, _, seen = experiment_clone
    # Until its train stage starts, the running row shows the baseline's file; then this run's steps.
    baseline = json.loads((pipeline.path / "reports" / "live" / "metrics.json").read_text())
    fresh = [step for step, loss in seen if (step, loss) != (baseline["step"], baseline["loss"]["total"])]
    assert fresh and set(fresh) <= {1, 2}, seen  # outer_iters 2


def test_exp_show_lists_the_experiment_with_its_metrics(pipeline, experiment_clone):
    clone, _, _ = experiment_clone
    table = list(csv.DictReader(io.StringIO(pipeline.dvc("exp", "show", "--csv", cwd=clone).stdout)))
    bits_column = next(c for c in table[0] if c.endswith("bits") and "params" in c.lower() or c == "bits")
    experiments = [row for row in table if row["Experiment"] and row["rev"] != "workspace"]
    assert [row[bits_column] for row in experiments] == ["24"]
    row = experiments[0]
    for metric in ("mAP", "P@5000", "mAP@5000", "train_seconds"):
        column = next(c for c in row if c == metric or c.endswith(f":{metric}"))
        assert 0 <= float(row[column]) < 1e6, metric


def is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


DVC_COLUMNS = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")  # DVC's own, before the data
HEADLINE = ["mAP", "mAP@5000", "P@5000", "mAC", "val_mAP", "train_seconds", "mAP_index_ties"]


def test_exp_show_leads_with_the_headline_metrics_then_the_params_that_define_a_run(pipeline, experiment_clone):
    """What a user compares comes first: the headline numbers (DVC shows metrics before params), the
    training progress (a running experiment's step), then dataset, bits, method and seed. No metric is
    a string: the diagnostics and the strings are files the report and `dsah compare` read."""
    clone, _, _ = experiment_clone
    rows = list(csv.reader(io.StringIO(pipeline.dvc("exp", "show", "--csv", cwd=clone).stdout)))
    header, rows = rows[0], rows[1:]
    own = [c for c in header if c in DVC_COLUMNS]
    assert header[:len(own)] == own and own[:5] == list(DVC_COLUMNS[:5])
    data = header[len(own):]
    first_param = data.index("dataset")  # params.yaml's first key: every metric column comes before it
    assert data[:first_param] == [*HEADLINE, "loss.total", "step"], header[:20]
    assert set(data[first_param:first_param + 4]) == {"dataset", "bits", "method", "seed"}
    assert len(rows) == 3  # the workspace, the pipeline's commit and the experiment at 24 bits
    for row in rows:
        cells = dict(zip(header, row))
        for column in data[:first_param]:
            assert cells[column] == "" or is_number(cells[column]), (column, cells[column])
        assert all(cells[column] != "" for column in HEADLINE), cells


def test_compare_builds_the_paper_table_from_experiments(pipeline, experiment_clone):
    clone, _, _ = experiment_clone
    out = pipeline.run(sys.executable, "-m", "dsah.cli", "compare", cwd=clone).stdout
    assert has_row(out, "method", "12 bits", "24 bits", "36 bits", "48 bits")
    cells = next(row for row in table_rows(out) if row[0] == "dsah (ours)")
    assert cells[1] == "–" and cells[2] != "–" and cells[3] == "–"  # the experiment at 24; the baseline is no run
    assert has_row(out, "DSAH (paper)", "0.911", "0.930", "0.943", "0.948")
    runs = list(csv.DictReader(open(clone / "reports" / "compare.csv")))
    assert [int(r["bits"]) for r in runs] == [24]
    # From the experiment's own record (no DVC metric): its protocol and what it learned from.
    assert runs[0]["protocol"] == "cifar10" and runs[0]["features"].startswith("images (cifar_resnet")
    assert 0 <= float(runs[0]["query_label_errors"]) <= 2  # one label of ten: its pattern is either right or two off
    # Fig.3: the experiment's own bit-correlation heatmap (from its commit), under its title.
    assert "bit correlations at 24 bits" in out and float(runs[0]["mAC"]) >= 0
    shown = Image.open(clone / "reports" / "compare-bit-correlation.png").convert("RGB")
    stored = subprocess.run(["git", "show", f"{runs[0]['rev']}:reports/plots/bit_correlation.png"], cwd=clone,
                            check=True, capture_output=True).stdout
    heatmap = Image.open(io.BytesIO(stored)).convert("RGB")
    assert shown.crop((0, shown.height - heatmap.height, heatmap.width, shown.height)).tobytes() == heatmap.tobytes()
