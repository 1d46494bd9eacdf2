"""The Prefect retrain flow on the tiny profile: in a test harness, and as a scheduled deployment served
against a real Prefect server on 127.0.0.1."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, clone_with_outputs
from fixtures import make_cifar_jpg_archive

from dsah.experiments import commands

pytestmark = pytest.mark.integration
FLOWS = ROOT / "flows"
PREFECT = [sys.executable, "-m", "prefect"]
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


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_logs(state) -> dict[str, tuple[object, list[tuple[object, str]]]]:
    """A finished flow run's task runs: name -> (end time, [(log time, message), ...])."""
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
    tasks = task_logs(state)
    name = first.name
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
    assert promoted["tag"] in pipeline.run("git", "tag", cwd=repo).stdout.split()
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
    assert json.loads((repo / "models" / "promoted.json").read_text())["tag"] == promoted["tag"]
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


def workspace_processes(repo: Path) -> list[str]:
    """Live processes (not zombies) working in the workspace or naming it on their command line."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue  # gone, or not ours to read
        if state != "Z" and (cwd == str(repo) or cwd.startswith(f"{repo}/") or str(repo) in cmdline):
            found.append(f"{entry}: {cmdline.strip()}")
    return found


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
    state = retrain(str(repo), bits=[12, 16, 24, 32], profile="tiny", experiments_timeout=TIMEOUT, return_state=True)
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


TIMEOUT = 25  # seconds for the experiments: each tiny experiment takes 10-20 s


HOLD_SLOT = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from dsah.orchestration import workspace_slot
with workspace_slot(Path(sys.argv[2]), lease=60):
    print("held", flush=True)
    time.sleep(600)
"""


def test_one_run_per_workspace_and_a_crashed_holder_frees_its_slot_when_its_lease_expires(pipeline, tmp_path):
    """The workspace slot on a real server (its repossessor frees expired leases; the test harness's
    temporary server runs none): the same workspace waits, another does not, and a SIGKILLed holder's slot
    frees once its 60 s lease (the server's minimum) runs out where the holder ran on another machine, at
    once where it ran on this one."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from dsah.orchestration import HOLDER, WorkspaceBusy, workspace_limit, workspace_slot

    one, other = tmp_path / "one", tmp_path / "other"
    assert workspace_limit(one) != workspace_limit(other)
    with real_server(pipeline, tmp_path, PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="2",
                     PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS="2") as env, \
            temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(FLOWS), str(one)], env=env,
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            start = time.monotonic()
            with pytest.raises(WorkspaceBusy, match=f"another run held {one} .*{workspace_limit(one)}.* over 3 s"):
                with workspace_slot(one, wait=3):
                    pass
            assert time.monotonic() - start >= 3
            start = time.monotonic()
            with workspace_slot(other, wait=3):  # another workspace: no wait
                assert time.monotonic() - start < 3
            # A holder on another machine (its record names that machine): only its lease can tell it died.
            record = json.loads((one / HOLDER).read_text())
            assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
            (one / HOLDER).write_text(json.dumps({**record, "host": "another-machine"}))
            holder.kill()  # a crash: no release, no more renewals
            holder.wait()
            killed = time.monotonic()
            with workspace_slot(one, wait=120):
                waited = time.monotonic() - killed
                assert json.loads((one / HOLDER).read_text())["pid"] == os.getpid()
            assert not (one / HOLDER).exists()  # released: no record

            # A holder of this machine that died: freed at once, whatever the server keeps of its lease.
            holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(FLOWS), str(other)], env=env,
                                      stdout=subprocess.PIPE, text=True)
            assert holder.stdout.readline().strip() == "held"
            holder.kill()
            holder.wait()
            start = time.monotonic()
            with workspace_slot(other, wait=30):
                assert time.monotonic() - start < 5
        finally:
            holder.kill()
            holder.wait()
    # Not at once (nobody released it), and no later than the lease plus the repossessor's loop and retries.
    assert 5 < waited < 60 + 20, waited
    print(f"the crashed holder's slot freed {waited:.0f} s after the kill")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def background(args, env, log: Path | None = None):
    """A long-running command in its own process group, stopped with its children on the way out."""
    out = open(log, "w") if log else subprocess.DEVNULL
    process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log:
            out.close()


@contextmanager
def real_server(pipeline, tmp_path: Path, **settings: str):
    """`prefect server start` on a free loopback port, its own PREFECT_HOME; yields the env that reaches it."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**pipeline.env, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", **settings}
    with background([*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env):
        wait_for(lambda: urllib.request.urlopen(f"{api}/health", timeout=2).status == 200, 120, "server health")
        yield env


def prefect_cli(env, *args) -> str:
    return subprocess.run([*PREFECT, *args], env=env, capture_output=True, text=True, check=True).stdout


def client_script(env, script: str, *args) -> object:
    return json.loads(subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                                     check=True).stdout)


def test_scheduled_deployment_on_a_real_server(pipeline, tmp_path):
    repo = clone_with_outputs(pipeline, tmp_path / "repo")
    with real_server(pipeline, tmp_path) as env, \
            background([sys.executable, str(FLOWS / "serve.py"), "--repo", str(repo), "--profile", "tiny",
                        "--bits", "12"], env):
        def cli(*args):
            return prefect_cli(env, *args)

        def runs():
            return client_script(env, LIST_RUNS)

        wait_for(lambda: sum(r["state"] == "SCHEDULED" for r in runs()) >= 1, 90, "scheduled runs")
        before = {r["id"] for r in runs()}
        start = time.monotonic()
        cli("deployment", "run", "retrain/scheduled")  # two at once: the workspace lock serializes them
        cli("deployment", "run", "retrain/scheduled", "--param", "bits=[24]")
        wait_for(lambda: [r["state"] for r in runs() if r["id"] not in before] == ["COMPLETED"] * 2, 400,
                 "two triggered runs to complete")
        elapsed = time.monotonic() - start
        listed = client_script(env, LIST_ARTIFACTS)
        assert sorted(listed) == sorted([["dsah-retrain-report", "markdown"], ["dsah-retrain-metrics", "table"]] * 2)
        history = sorted(p.name for p in (repo / "history").iterdir() if p.is_dir())
        assert len(history) == 2 and pipeline.status(cwd=repo) == {}
        print(f"two tiny scheduled-deployment runs end to end in {elapsed:.0f} s; history {history}")

        # A run interrupted mid-way leaves the serving model and its report as they were.
        served = {name: digest(repo / name) for name in ("models/model.pt", "models/promoted.json",
                                                          "reports/report.html", "dvc.lock")}
        head = pipeline.run("git", "rev-parse", "HEAD", cwd=repo).stdout
        known = {r["id"] for r in runs()}
        # Two experiments, cancelled while the first trains: promotion is a whole experiment away, so
        # the cancellation reaches the run before it (a queued name alone may already have finished).
        cli("deployment", "run", "retrain/scheduled", "--param", "bits=[32, 48]")
        wait_for(lambda: "Running" in [s for n, s in commands.experiment_states(repo).items() if n.endswith("-dsah-32")],
                 120, "the first experiment to train")
        interrupted = next(r for r in runs() if r["id"] not in known)
        cli("flow-run", "cancel", interrupted["id"])
        wait_for(lambda: next(r for r in runs() if r["id"] == interrupted["id"])["state"] in ("CANCELLED", "CRASHED"),
                 60, "the run to stop")
        assert {name: digest(repo / name) for name in served} == served
        assert pipeline.run("git", "rev-parse", "HEAD", cwd=repo).stdout == head
        # The cancellation killed the run's DVC commands and their stages (serve.py names the repo too).
        wait_for(lambda: not [p for p in workspace_processes(repo) if "dvc" in p], 30, "the run's DVC processes to end")

        # What the deployment fixes, a run cannot change; what a run may set is checked before anything runs.
        evil = tmp_path / "elsewhere"
        attempts = {"repo": ["--param", f"repo={evil}", "--param", "history=/tmp"],
                    "methods": ["--param", 'methods=["dsah,adsh"]']}
        messages = {}
        for what, args in attempts.items():
            out = cli("deployment", "run", "retrain/scheduled", *args)
            run_id = out.split("UUID:")[1].split()[0]
            wait_for(lambda: client_script(env, READ_RUN, run_id)["state"] in ("FAILED", "CRASHED", "COMPLETED"), 120,
                     f"the run that sets {what} to end")
            messages[what] = client_script(env, READ_RUN, run_id)
        assert all(m["state"] == "FAILED" for m in messages.values()), messages
        assert "fixes repo, history, git_remote where it is created; this run set repo=" in messages["repo"]["message"]
        assert "history='/tmp'" in messages["repo"]["message"]
        assert "unknown method 'dsah,adsh'" in messages["methods"]["message"]
        assert not evil.exists() and pipeline.run("git", "rev-parse", "HEAD", cwd=repo).stdout == head


def test_work_pool_worker_runs_the_flow_from_git_and_publishes_to_the_remotes(pipeline, tmp_path):
    """flows/deploy.py on a real server that requires basic auth: a `process` pool whose job template lets no
    run redirect itself, a deployment whose code a worker clones from a git remote, one tiny run through
    `prefect worker start`; the promoted tag reaches the git remote and the model the DVC remote, so another
    checkout gets exactly the serving model."""
    repo = clone_with_outputs(pipeline, tmp_path / "repo")
    origin = tmp_path / "origin.git"  # the shared git remote: the flow code's source and the tags' destination
    pipeline.run("git", "clone", "-q", "--bare", str(repo), str(origin))
    with real_server(pipeline, tmp_path, PREFECT_SERVER_API_AUTH_STRING="dsah:s3cret") as env:
        api = env["PREFECT_API_URL"]
        with pytest.raises(urllib.error.HTTPError, match="401"):  # no credentials, no API
            urllib.request.urlopen(urllib.request.Request(f"{api}/flow_runs/filter", data=b"{}", method="POST",
                                                          headers={"Content-Type": "application/json"}), timeout=10)
        env = {**env, "PREFECT_API_AUTH_STRING": "dsah:s3cret", "PREFECT_WORKER_QUERY_SECONDS": "2"}
        subprocess.run([sys.executable, str(FLOWS / "deploy.py"), "--pool", "dsah-test", "--source", str(origin),
                        "--repo", str(repo), "--profile", "tiny", "--bits", "12", "--git-remote", str(origin)],
                       env=env, check=True)
        deployment = client_script(env, READ_DEPLOYMENT)
        assert deployment["pool_type"] == "process" and deployment["work_pool_name"] == "dsah-test"
        assert deployment["pull_steps"][0]["prefect.deployments.steps.git_clone"]["repository"] == str(origin)
        assert not {"command", "env", "working_dir"} & set(deployment["pool_variables"])
        log = tmp_path / "worker.log"
        with background([*PREFECT, "worker", "start", "--pool", "dsah-test", "--type", "process"], env, log):
            start = time.monotonic()
            # Job variables that would run another command elsewhere: the pool's template has no place for them.
            out = prefect_cli(env, "deployment", "run", "retrain/pool", "--job-variable", "command=false",
                              "--job-variable", "working_dir=/", "--job-variable", 'env={"DSAH_DATA_HOME": "/nowhere"}')
            run_id = out.split("UUID:")[1].split()[0]
            try:
                wait_for(lambda: client_script(env, READ_RUN, run_id)["state"] in ("COMPLETED", "FAILED", "CRASHED"),
                         400, "the pool's run to finish")
            except AssertionError:
                print(log.read_text()[-4000:])
                raise
            elapsed = time.monotonic() - start
            run = client_script(env, READ_RUN, run_id)
            assert run["state"] == "COMPLETED", log.read_text()[-4000:]
        assert run["work_pool_name"] == "dsah-test"
        listed = client_script(env, LIST_ARTIFACTS)
    assert sorted(listed) == [["dsah-retrain-metrics", "table"], ["dsah-retrain-report", "markdown"]]
    (history,) = [p for p in (repo / "history").iterdir() if p.is_dir()]
    assert history.name.endswith(run_id[-6:]) and (history / "run.json").is_file()
    assert pipeline.status(cwd=repo) == {}
    tag = json.loads((repo / "models" / "promoted.json").read_text())["tag"]
    assert tag == f"model-{history.name}"
    assert f"refs/tags/{tag}" in pipeline.run("git", "ls-remote", "--tags", str(origin)).stdout
    # Elsewhere: `git clone` the remote at the tag, `dvc pull` the model: exactly the serving one.
    user = tmp_path / "user"
    pipeline.run("git", "clone", "-q", "--branch", tag, str(origin), str(user))
    remote = pipeline.dvc("remote", "list").stdout.split()[1]
    pipeline.dvc("remote", "modify", "--local", "local", "url", remote, cwd=user)
    pipeline.dvc("pull", "models/model.pt", cwd=user)
    assert digest(user / "models" / "model.pt") == digest(repo / "models" / "model.pt")
    print(f"one tiny run through the work pool in {elapsed:.0f} s (trigger to COMPLETED); tag {tag}")


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 (not there yet: a server starting, a DVC lock held, a row not written)
            pass
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


LIST_RUNS = """
import json
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print(json.dumps([{"id": str(r.id), "state": r.state.type.value} for r in client.read_flow_runs()]))
"""
READ_RUN = """
import json, sys
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    run = client.read_flow_run(sys.argv[1])
    print(json.dumps({"state": run.state.type.value, "work_pool_name": run.work_pool_name,
                      "message": run.state.message}))
"""
READ_DEPLOYMENT = """
import json
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    (deployment,) = client.read_deployments()
    pool = client.read_work_pool(deployment.work_pool_name)
    print(json.dumps({"work_pool_name": pool.name, "pool_type": pool.type, "pull_steps": deployment.pull_steps,
                      "pool_variables": list(pool.base_job_template["variables"]["properties"])}))
"""
LIST_ARTIFACTS = """
import json
from prefect.client.orchestration import get_client
with get_client(sync_client=True) as client:
    print(json.dumps([[a.key, a.type] for a in client.read_artifacts()]))
"""


def test_compare_flow_runs_methods_by_lengths_and_writes_the_table(pipeline, harness, git_identity, tmp_path):
    """The tiny profile of the one-command comparison: two methods (one classic, one deep) x two lengths."""
    import csv

    from compare import MARKDOWN_KEY, compare, tabulate
    from prefect import flow

    repo = clone_with_outputs(pipeline, tmp_path / "repo")
    state = compare(str(repo), bits=[12, 16], methods=["itq", "dsah"], profile="tiny", return_state=True)
    out = Path(state.result())
    assert out.parent == repo / "reports" / "compare"
    tasks = task_logs(state)
    for method in ("itq", "dsah"):
        for bits in (12, 16):
            assert f"{out.name}-{method}-{bits}" in tasks, sorted(tasks)
    assert_streamed(tasks, f"{out.name}-dsah-16", "Running stage 'train':")
    runs = list(csv.DictReader(open(out / "compare.csv")))
    assert sorted((r["method"], int(r["bits"])) for r in runs) == [("dsah", 12), ("dsah", 16), ("itq", 12), ("itq", 16)]
    assert all(0 <= float(r["mAP"]) <= 1 and float(r["train_seconds"]) > 0 for r in runs)
    table = (out / "compare.md").read_text()
    for heading in ("## cifar10 (protocol cifar10)", "### mAP", "### P@5000", "### Training seconds",
                    "### What each method learned from", "## Not reproduced"):
        assert heading in table, heading
    # The setup table names the features and the training-set size of each method.
    assert "| itq (ours) | pixels (8x8 downsampled, 192-d) | 58000 |" in table
    assert "| dsah (ours) | images (cifar_resnet width 8, from scratch) | 1024 |" in table
    assert "- FATH: " in table and "| DSAH (paper) | 0.911 |" in table
    svg = (out / "compare.svg").read_text()
    assert svg.startswith("<svg") and "itq" in svg and "dsah" in svg and (out / "compare-p5000.svg").is_file()
    assert "bit correlations at 16 bits" in table and (out / "compare-bit-correlation.png").is_file()  # Fig.3
    assert artifacts([MARKDOWN_KEY]) == [(MARKDOWN_KEY, "markdown")]

    # Someone commits while a long comparison runs: its experiments are still found by their names.
    subprocess.run(["git", "commit", "--allow-empty", "-qm", "meanwhile"], cwd=repo, check=True)
    names = [f"{out.name}-{m}-{b}" for m in ("itq", "dsah") for b in (12, 16)]
    again = Path(flow(lambda: tabulate(repo, names, tmp_path / "again", "again"), name="tabulate-again")())
    assert len(list(csv.DictReader(open(again / "compare.csv")))) == 4


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
    trained = [name for name in task_logs(state) if name.startswith("abl-cifar10-12-")]
    assert sorted(trained) == ["abl-cifar10-12-adsh-s0", "abl-cifar10-12-dsah-s0"]
    runs = {r["variant"]: r for r in csv.DictReader(open(out / "runs.csv"))}
    assert set(runs) == {"adsh", "dsah"} and all(0 <= float(r["mAP"]) <= 1 for r in runs.values())
    table = (out / "ablation.md").read_text()
    assert "## cifar10, 12 bits" in table and "| DSAH vs ADSH (the paper's claim) | adsh |" in table
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
    carried = ablation(str(repo), **options, carry=str(earlier), return_state=True)
    assert carried.is_completed() and not [n for n in task_logs(carried) if n.startswith("abl-")]
    assert "2 of 2 planned experiments finished (2 carried from" in (out / "ablation.md").read_text()
    assert (out / "summary.csv").read_text() == summary

    # Out of time before the other variants finished: the run fails, and its table holds what finished.
    stopped = ablation(str(repo), **{**options, "variants": ["adsh", "dsah", "adsh_init_lam_eta", "dsah_no_mu"]},
                       carry=str(earlier), experiments_timeout=1, return_state=True)
    assert stopped.is_failed() and "experiments_timeout" in str(stopped.message)
    assert "2 of 4 planned experiments finished (2 carried from" in (out / "ablation.md").read_text()
    # DSAH without mu is the ladder's third rung: one run for both, started under the rung's name.
    assert "2 of 4 experiments finished already; the other 2 take 1 runs" in " ".join(flow_messages(stopped))
    assert [n for n in task_logs(stopped) if n.startswith("abl-")] == ["abl-cifar10-12-adsh_init_lam_eta-s0"]
