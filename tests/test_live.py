"""The training log through DVCLive: what the train stage writes (a step per outer iteration, the whole
history after a resume), what DVC reads from it, and what the report reads back. `dvc exp show` during a
run: tests/test_experiments.py; the plots: tests/test_plots.py."""

import csv
import json
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, load_script

import dsah
from dsah.evaluation.report import read_live

# The rows train() hands to on_iteration (dsah.training.loop): DSAH's loss terms, validation at the last iteration.
ROWS = [
    {"iteration": 1, "similar_share": 0.1, "pairwise": 310.0, "quantization": 0.02, "semantic": 1.5, "decoder": 0.7,
     "loss": 312.22, "train_seconds": 1.5},
    {"iteration": 2, "similar_share": 0.1, "pairwise": 120.0, "quantization": 0.01, "semantic": 0.5, "decoder": 0.3,
     "loss": 120.81, "val_mAP": 0.4, "val_mAP@5000": 0.45, "train_seconds": 3.0},
]


def train_stage():
    """stages/train.py as a module (its main() is not run)."""
    return load_script(ROOT / "stages" / "train.py", "train_stage")


def tsv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


# The one module that needs the pipeline extra: what the Prefect flows share.
NEEDS_PREFECT = "dsah.orchestration"


def test_the_library_imports_without_the_pipeline_tools():
    """Every module of dsah but the flows' shared one imports without dvc, dvclive, prefect or
    great_expectations: the library takes a callback (train(on_iteration=...)) and the stage scripts and
    flows bring the tools."""
    names = [m.name for m in pkgutil.walk_packages(dsah.__path__, "dsah.") if m.name != NEEDS_PREFECT]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'dvc', 'dvclive', 'prefect', 'great_expectations'}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert len(names) > 40 and out.strip() == "[]"


def test_each_row_is_a_step_the_report_reads_back_and_a_new_log_starts_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no DVC repo here: DVCLive only writes its folder
    stage = train_stage()
    folder = tmp_path / "live"
    log = stage.TrainingLog(folder)
    for row in ROWS:
        log(row)
    log.end()
    metrics = folder / "plots" / "metrics"
    assert sorted(p.relative_to(metrics).as_posix() for p in metrics.rglob("*.tsv")) == [
        "loss/decoder.tsv", "loss/pairwise.tsv", "loss/quantization.tsv", "loss/semantic.tsv", "loss/total.tsv",
        "similar_share.tsv", "train_seconds.tsv", "val/mAP.tsv", "val/mAP@5000.tsv"]
    assert tsv(metrics / "loss" / "quantization.tsv") == [{"step": "1", "quantization": "0.02"},
                                                          {"step": "2", "quantization": "0.01"}]
    # What `dvc exp show` reads: the progress only (the scores and terms are in the files above).
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary == {"loss": {"total": 120.81}, "step": 2}
    assert read_live(metrics, "loss/total") == ([1.0, 2.0], [312.22, 120.81])
    assert read_live(metrics, "val/mAP") == ([2.0], [0.4])  # only the iterations that validated
    assert not list(tmp_path.rglob("dvc.yaml"))  # dvc.yaml declares the files; DVCLive adds no declaration

    # A new log (a rerun, or a resume before train() replays the checkpoint's rows) clears the folder.
    again = stage.TrainingLog(folder)
    again(ROWS[0])
    again.end()
    assert read_live(metrics, "loss/total") == ([1.0], [312.22]) and not (metrics / "val").exists()


@pytest.mark.integration
def test_the_train_stage_logged_every_outer_iteration_and_dvc_reads_it(pipeline):
    live = pipeline.path / "reports" / "live"
    outer_iters = yaml.safe_load((pipeline.path / "params.yaml").read_text())["train_imgnet"]["outer_iters"]
    terms = {p.stem for p in (live / "plots" / "metrics" / "loss").glob("*.tsv")}
    assert {"total", "pairwise", "quantization"} <= terms  # DSAH's terms, the quantization term among them
    for term in terms:
        assert [int(r["step"]) for r in tsv(live / "plots" / "metrics" / "loss" / f"{term}.tsv")] == [1, 2]
    summary = json.loads((live / "metrics.json").read_text())
    total = float(tsv(live / "plots" / "metrics" / "loss" / "total.tsv")[-1]["total"])
    assert summary == {"loss": {"total": pytest.approx(total)}, "step": 2} and outer_iters == 2
    shown = json.loads(pipeline.dvc("metrics", "show", "--json").stdout)[""]["data"]  # "": the workspace
    assert shown["reports/live/metrics.json"]["data"]["step"] == 2
    # DVCLive declared nothing of its own: dvc.yaml is the project's, and no other dvc.yaml appeared.
    assert (pipeline.path / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()
    assert [p.relative_to(pipeline.path) for p in pipeline.path.rglob("dvc.yaml")] == [Path("dvc.yaml")]


@pytest.mark.integration
def test_a_killed_train_stage_resumes_and_its_dvclive_files_hold_the_uninterrupted_history(pipeline, tmp_path):
    """The stage's own command, its outputs under tmp_path, killed after the first outer iteration's
    checkpoint, then rerun: DVCLive clears its folder on start, train() replays the checkpoint's row, and
    the files end as the uninterrupted run's (the shared pipeline run's; seconds aside)."""
    command = yaml.safe_load((pipeline.path / "dvc.yaml").read_text())["stages"]["train"]["cmd"].split()
    outputs = {"--model": "model.pt", "--codes": "codes.npy", "--live": "live", "--metrics": "train.json",
               "--checkpoint": "train.pt"}
    command = [sys.executable] + [str(tmp_path / outputs[before]) if before in outputs else word
                                  for before, word in zip(command, command[1:])]
    checkpoint = tmp_path / "train.pt"
    process = subprocess.Popen(command, cwd=pipeline.path, env=pipeline.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.kill()
    process.wait()
    assert torch.load(checkpoint, weights_only=True)["iteration"] == 1 and not (tmp_path / "train.json").exists()
    assert [r["step"] for r in tsv(tmp_path / "live" / "plots" / "metrics" / "loss" / "total.tsv")] == ["1"]

    resumed = pipeline.run(*command)
    assert f"resuming from {checkpoint} after outer iteration 1/2" in resumed.stdout
    assert not checkpoint.exists()
    ours, theirs = tmp_path / "live" / "plots" / "metrics", pipeline.path / "reports" / "live" / "plots" / "metrics"
    names = sorted(p.relative_to(theirs) for p in theirs.rglob("*.tsv"))
    assert names == sorted(p.relative_to(ours) for p in ours.rglob("*.tsv")) and len(names) > 4
    for name in names:
        mine, reference = tsv(ours / name), tsv(theirs / name)
        assert [r["step"] for r in mine] == [r["step"] for r in reference] and len(mine) >= 1, name
        if name.stem != "train_seconds":  # CPU training with a fixed seed: the same numbers
            assert [float(r[name.stem]) for r in mine] == pytest.approx([float(r[name.stem]) for r in reference],
                                                                       rel=1e-6), name
