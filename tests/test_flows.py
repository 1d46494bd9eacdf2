"""The Prefect flows (retrain, ablation and its studies) on the tiny profile, in a test harness; the deployments on
a real server are tests/test_deployments.py."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, clone_with_outputs, digest, workspace_processes
from fixtures import has_row, make_cifar_jpg_archive

from dsah.experiments import commands, promotion, registry
from dsah.search.index import HammingIndex

pytestmark = pytest.mark.integration
FLOWS = ROOT / "flows"
sys.path.insert(0, str(FLOWS))  # the tests import the flow scripts; the flows share dsah.orchestration


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def git_identity(pipeline, monkeypatch):
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(key, pipeline.env[key])
    monkeypatch.setenv("DSAH_CACHE_HOME", pipeline.env["DSAH_CACHE_HOME"])
    monkeypatch.setenv("DSAH_DATA_HOME", pipeline.env["DSAH_DATA_HOME"])


def artifacts(keys):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys))))
    return sorted((a.key, a.type) for a in found)


def task_logs(state, expect: tuple[str, ...] = (), timeout: float = 60) -> dict[str, tuple[object, list]]:
    """A finished flow run's task runs: name -> (end time, [(log time, message), ...]). The server records task
    runs from the flow's events, after the flow may have returned (late under load): each name prefix in
    `expect` is waited for, ended and with its logs, up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = read_task_logs(state)
        if time.monotonic() > deadline or all(any(name.startswith(prefix) and end is not None and logs
                                                  for name, (end, logs) in found.items()) for prefix in expect):
            return found
        time.sleep(1)


def read_task_logs(state) -> dict[str, tuple[object, list[tuple[object, str]]]]:
    """A flow run's task runs as the server has them now: name -> (end time, [(log time, message), ...])."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterTaskRunId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[state.state_details.flow_run_id])))
        logs = client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[r.id for r in runs])))
    by_run = {r.id: (r.name, r.end_time) for r in runs}
    found = {name: (end, []) for name, end in by_run.values()}
    for log in sorted(logs, key=lambda log: log.timestamp):
        found[by_run[log.task_run_id][0]][1].append((log.timestamp, log.message))
    return found


def flow_messages(state) -> list[str]:
    """A finished flow run's own log lines (its prints), in order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    return [log.message for log in sorted(logs, key=lambda log: log.timestamp)]


def assert_streamed(tasks, name: str, marker: str) -> None:
    """The task run `name` logged `marker` (its command's output) while it ran: seconds before it ended, not
    all at its end."""
    end, logs = tasks[name]
    stamps = [t for t, message in logs if marker in message]
    assert stamps, f"{name}: no log line with {marker!r} in {[m for _, m in logs][:20]}"
    assert (end - stamps[0]).total_seconds() > 2, (name, stamps[0], end)


def test_retrain_promotes_then_keeps_the_better_model_and_publishes(pipeline, harness, git_identity, tmp_path):
    from retrain import MARKDOWN_KEY, TABLE_KEY, retrain

    repo = clone_with_outputs(pipeline, tmp_path / "repo")
    pipeline.dvc("remote", "modify", "--local", "local", "url", "/dev/null/remote", cwd=repo)  # no remote to push to
    state = retrain(str(repo), bits=[12, 16], profile="tiny", return_state=True)
    first = Path(state.result())
    # Each experiment is a task run of its own, its stages' output in its log as they ran (at 12 bits,
    # the workspace's own settings, DVC finds nothing to rerun).
    name = first.name
    tasks = task_logs(state, expect=(f"{name}-dsah-12", f"{name}-dsah-16", "update_data"))
    assert {f"{name}-dsah-12", f"{name}-dsah-16"} <= set(tasks), sorted(tasks)
    assert any("Stage 'train' didn't change, skipping" in m for _, m in tasks[f"{name}-dsah-12"][1])
    assert_streamed(tasks, f"{name}-dsah-16", "Running stage 'train':")
    assert any("validate" in message for _, message in tasks[next(t for t in tasks if t.startswith("update_data"))][1])
    assert commands.experiment_states(repo).get(f"{name}-data") is None  # the data step's experiment is removed
    promoted = json.loads((repo / "models" / "promoted.json").read_text())
    assert promoted["experiment"].startswith(f"{name}-dsah-1") and promoted["decision"]["reason"] == "no model serves yet"
    # The failed push is on record in the promotion's commit (the model is served; the remote can catch up).
    assert "`" in promoted["push_error"] and "dvc push` failed" in promoted["push_error"]
    assert pipeline.run("git", "status", "--porcelain", "models/promoted.json", cwd=repo).stdout == ""
    # GTO holds the version and the stage: two tags on the promotion's commit, which current_model reads.
    head = pipeline.run("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()
    assert sorted(pipeline.run("git", "tag", "--points-at", head, cwd=repo).stdout.split()) == [
        "dsah-model#prod#1", "dsah-model@v0.0.1"]
    assert registry.stage_commit(repo) == head and promotion.current_model(repo) == promoted
    # `dsah search --stage prod` reads the staged model and its commit's index through DVC's artifact API.
    entry = str(HammingIndex.load(repo / "data" / "index").ids[7])
    staged = json.loads(pipeline.run(sys.executable, "-m", "dsah.cli", "search", "--stage", "prod", "--id", entry,
                                     "--json", cwd=repo).stdout)
    here = json.loads(pipeline.run(sys.executable, "-m", "dsah.cli", "search", "--id", entry, "--json",
                                   cwd=repo).stdout)
    assert staged["queries"] == here["queries"] and staged["queries"][0]["results"]
    fetched = tmp_path / "fetched.pt"
    pipeline.dvc("artifacts", "get", str(repo), "dsah-model", "--stage", "prod", "-o", str(fetched), cwd=tmp_path)
    assert digest(fetched) == digest(repo / "models" / "model.pt")
    assert {p.name for p in first.iterdir()} >= {"params.yaml", "dvc.lock", "metrics.json", "report.html", "plots",
                                                  "run.json", "summary.md"}
    model = digest(repo / "models" / "model.pt")
    # The published report links the validation's Data Docs (its run page and the site).
    summary_md = (first / "summary.md").read_text()
    assert "30 of 30 checks of the cifar10 suite passed ([Data Docs of the latest validation](file://" in summary_md
    page = summary_md.split("[Data Docs of the latest validation](file://")[1].split(")")[0]
    assert Path(page).is_file() and page.endswith("/reports/data_docs/latest.html")

    # A candidate like the serving model (whichever length scored higher) must now beat it by a whole mAP
    # point: it is kept out.
    assert promoted["bits"] in (12, 16)
    second = Path(retrain(str(repo), bits=[promoted["bits"]], profile="tiny", tolerance=-1.0))
    summary = json.loads((second / "run.json").read_text())
    assert summary["decision"]["promote"] is False and "<" in summary["decision"]["reason"]
    assert digest(repo / "models" / "model.pt") == model
    assert json.loads((repo / "models" / "promoted.json").read_text()) == promoted
    assert registry.stage_commit(repo) == head  # the stage did not move
    assert first.is_dir() and (first / "report.html").is_file()  # the first run's report is intact
    index = (first.parent / "index.md").read_text()
    assert first.name in index and second.name in index
    assert pipeline.status(cwd=repo) == {}
    assert artifacts([MARKDOWN_KEY, TABLE_KEY]) == sorted([(MARKDOWN_KEY, "markdown"), (TABLE_KEY, "table")] * 2)


def test_failed_validation_of_the_flows_dataset_stops_it_before_training(pipeline, harness, git_identity, tmp_path,
                                                                         monkeypatch):
    from retrain import retrain

    repo = clone_with_outputs(pipeline, tmp_path / "repo")
    # params.yaml names a dataset with no data here: the run must prepare and validate its own (cifar10).
    params = repo / "params.yaml"
    params.write_text(re.sub(r"^dataset: cifar10\b", "dataset: coco", params.read_text(), count=1, flags=re.M))
    assert re.search(r"^dataset: coco\b", params.read_text(), flags=re.M)
    home = tmp_path / "data-home"
    home.mkdir()
    make_cifar_jpg_archive(home / "cifar10-jpg.tar.gz", 250, 0)  # 2,500 images, not CIFAR-10's 60,000
    monkeypatch.setenv("DSAH_DATA_HOME", str(home))
    head = pipeline.run("git", "rev-parse", "HEAD", cwd=repo).stdout
    state = retrain(str(repo), bits=[12], profile="tiny", return_state=True)
    assert state.is_failed()
    with pytest.raises(commands.ValidationFailed, match=r"validation of cifar10 failed:\n.*row_count: observed 2500; "
                                                      r"expected 60000 \(rows"):
        state.result()
    assert not any(name.endswith("-dsah-12") for name in task_logs(state))  # nothing trained
    assert pipeline.run("git", "rev-parse", "HEAD", cwd=repo).stdout == head
    assert not (repo / "models" / "promoted.json").exists()


def test_a_run_past_its_timeout_is_killed_with_its_dvc_workers_and_the_next_run_succeeds(
        pipeline, harness, git_identity, tmp_path):
    import threading

    from retrain import retrain

    repo = clone_with_outputs(pipeline, tmp_path / "repo")
    seen, done = set(), threading.Event()

    def watch():  # a training stage must have been there, or the test proves nothing about killing it
        while not done.wait(0.3):
            seen.update(p for p in workspace_processes(repo) if "stages/train" in p)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.monotonic()
    # Not 12 bits: the shared pipeline ran it, so DVC's run cache would restore it without a training stage.
    state = retrain(str(repo), bits=[16, 24, 32, 48], profile="tiny", experiments_timeout=TIMEOUT, return_state=True)
    elapsed = time.monotonic() - start
    done.set()
    watcher.join()
    assert state.is_failed()
    with pytest.raises(Exception, match="timeout|timed out"):
        state.result()
    assert seen, "no training stage ran before the timeout: raise TIMEOUT"
    assert workspace_processes(repo) == []
    assert not (repo / "models" / "promoted.json").exists()
    # DVC cleaned up after the killed experiment (its stage was stopped first): no "Running" record, no copy.
    assert "Running" not in commands.experiment_states(repo).values()
    assert list((repo / ".dvc" / "tmp" / "exps" / "standalone").glob("tmp*")) == []
    # DVC's locks are free: the next run trains, and wins.
    history = Path(retrain(str(repo), bits=[12], profile="tiny"))
    assert json.loads((history / "run.json").read_text())["decision"]["promote"] is True
    assert json.loads((repo / "models" / "promoted.json").read_text())["experiment"] == f"{history.name}-dsah-12"
    assert workspace_processes(repo) == []
    print(f"killed at the {TIMEOUT} s timeout, {elapsed:.0f} s into the run")


TIMEOUT = 40  # seconds for the experiments: each tiny experiment takes 10-25 s, DVC's start-up included


def test_ablation_flow_pairs_variants_by_seed_and_never_reruns_a_finished_experiment(pipeline, harness, git_identity,
                                                                                     tmp_path):
    """Two variants x one seed at the tiny profile, then the same call again: the second run trains nothing."""
    import csv

    from ablation import ablation

    repo = clone_with_outputs(pipeline, tmp_path / "repo")
    options = dict(datasets=["cifar10"], bits=[12], seeds=[0], variants=["adsh", "dsah"], profile="tiny")
    state = ablation(str(repo), **options, return_state=True)
    out = Path(state.result())
    assert out == repo / "reports" / "ablation"
    trained = [name for name in task_logs(state, expect=("abl-cifar10-12-adsh-s0", "abl-cifar10-12-dsah-s0"))
               if name.startswith("abl-cifar10-12-")]
    assert sorted(trained) == ["abl-cifar10-12-adsh-s0-tiny", "abl-cifar10-12-dsah-s0-tiny"]
    runs = {r["variant"]: r for r in csv.DictReader(open(out / "runs.csv"))}
    assert set(runs) == {"adsh", "dsah"} and all(0 <= float(r["mAP"]) <= 1 for r in runs.values())
    table = (out / "ablation.md").read_text()
    assert "## cifar10, 12 bits" in table and has_row(table, "DSAH vs ADSH (the paper's claim)", "adsh")
    assert "2 of 2 planned experiments finished" in table
    assert (out / "ablation-cifar10.svg").read_text().startswith("<svg")
    assert artifacts(["dsah-ablation"]) == [("dsah-ablation", "markdown")]

    again = ablation(str(repo), **options, return_state=True)
    assert again.is_completed() and not [n for n in task_logs(again) if n.startswith("abl-")]
    assert (out / "ablation.md").read_text() == table  # the same runs, the same table
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()[:7]
    assert {r["commit"] for r in runs.values()} == {head}  # where each result comes from

    # A commit made while a sitting runs: the sitting's table still holds the runs made before it.
    from ablation import project_params, tabulate
    from prefect import flow

    from dsah.experiments import studies

    began = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                           text=True).stdout.strip()
    subprocess.run(["git", "commit", "--allow-empty", "-qm", "meanwhile"], cwd=repo, check=True)
    planned = studies.plan("ablation", ["cifar10"], [12], [0], "tiny", project_params(repo), ["adsh", "dsah"])

    @flow
    def sitting(since: str) -> str:
        return tabulate(repo, "ablation", planned.to_dict("records"), False, tmp_path / "sitting", "tiny", None, since)

    sitting(began)
    assert "2 of 2 planned experiments finished" in (tmp_path / "sitting" / "ablation.md").read_text()

    # Another machine: the experiments are not there, the committed table is.
    earlier = tmp_path / "runs-of-another-machine.csv"
    earlier.write_bytes((out / "runs.csv").read_bytes())
    summary = (out / "summary.csv").read_text()
    subprocess.run([sys.executable, "-m", "dvc", "exp", "remove", "--all-commits"], cwd=repo, check=True)
    carried = ablation(str(repo), **options, carry=[str(earlier)], return_state=True)
    assert carried.is_completed() and not [n for n in task_logs(carried) if n.startswith("abl-")]
    assert "2 of 2 planned experiments finished (2 carried from" in (out / "ablation.md").read_text()
    assert (out / "summary.csv").read_text() == summary

    # Out of time before the other variants finished: the run fails, and its table holds what finished.
    stopped = ablation(str(repo), **{**options, "variants": ["adsh", "dsah", "adsh_init_lam_eta", "dsah_no_mu"]},
                       carry=[str(earlier)], experiments_timeout=1, return_state=True)
    assert stopped.is_failed() and "experiments_timeout" in str(stopped.message)
    assert "2 of 4 planned experiments finished (2 carried from" in (out / "ablation.md").read_text()
    # DSAH without mu is the ladder's third rung: one run for both, started under the rung's name.
    assert "2 of 4 experiments finished already; the other 2 take 1 runs" in " ".join(flow_messages(stopped))
    assert [n for n in task_logs(stopped) if n.startswith("abl-")] == ["abl-cifar10-12-adsh_init_lam_eta-s0-tiny"]


def test_the_table_study_writes_tab1_and_its_runs_count_for_the_paper_study(pipeline, harness, git_identity,
                                                                              tmp_path):
    """`make compare`'s study at the tiny profile (one classic, one deep method), then the paper study carrying
    its table: DSAH's seed-0 run is the paper study's too, so nothing trains."""
    import csv

    from ablation import ablation

    repo = clone_with_outputs(pipeline, tmp_path / "repo")
    state = ablation(str(repo), study="table", datasets=["cifar10"], bits=[12], seeds=[0], variants=["itq", "dsah"],
                     profile="tiny", return_state=True)
    out = Path(state.result())
    tasks = task_logs(state, expect=("tab-cifar10-12-dsah-s0-tiny", "tab-cifar10-12-itq-s0-tiny"))
    assert sorted(n for n in tasks if n.startswith("tab-")) == ["tab-cifar10-12-dsah-s0-tiny",
                                                                "tab-cifar10-12-itq-s0-tiny"]
    assert_streamed(tasks, "tab-cifar10-12-itq-s0-tiny", "Running stage 'train':")  # dsah: nothing to rerun
    table = (out / "compare.md").read_text()
    for heading in ("## cifar10 (protocol cifar10)", "### mAP", "### P@5000", "### Training seconds",
                    "### What each method learned from", "## Not reproduced", "- FATH: ",
                    "bit correlations at 12 bits"):
        assert heading in table, heading
    assert has_row(table, "DSAH (paper)", "0.911")
    # The setup table names the features and the training-set size of each method.
    assert has_row(table, "itq (ours)", "pixels (8x8 downsampled, 192-d)", "58000")
    assert has_row(table, "dsah (ours)", "images (cifar_resnet width 8, from scratch)", "1024")
    svg = (out / "compare.svg").read_text()
    assert svg.startswith("<svg") and "itq" in svg and "dsah" in svg and (out / "compare-p5000.svg").is_file()
    assert artifacts(["dsah-table"]) == [("dsah-table", "markdown")]
    assert (out / "heatmaps" / "tab-cifar10-12-dsah-s0-tiny.png").is_file()  # Fig.3's, kept for a carried table
    assert (out / "compare-bit-correlation.png").is_file()
    runs = {r["method"]: r for r in csv.DictReader(open(out / "runs.csv"))}
    assert set(runs) == {"itq", "dsah"} and runs["dsah"]["features"].startswith("images (cifar_resnet")

    paper = ablation(str(repo), study="paper", datasets=["cifar10"], bits=[12], seeds=[0], variants=["dsah"],
                     profile="tiny", carry=[str(out / "runs.csv")], return_state=True)
    assert paper.is_completed() and not [n for n in task_logs(paper) if n.startswith("pap-")]
    written = (repo / "reports" / "paper" / "paper.md").read_text()
    assert "1 of 1 planned experiments finished (1 carried from" in written
    moved = next(csv.DictReader(open(repo / "reports" / "paper" / "runs.csv")))
    assert (moved["experiment"], moved["runs_as"], moved["mAP"]) == ("pap-cifar10-12-dsah-s0-tiny",
                                                                    "tab-cifar10-12-dsah-s0-tiny", runs["dsah"]["mAP"])
