"""The retrain flow deployed on a real Prefect server on 127.0.0.1: one run per workspace across
processes (the server frees a crashed holder's slot), the scheduled deployment (flows/serve.py) and the
work-pool deployment (flows/deploy.py) whose worker runs the flow from git. In a file of their own so that
the two test workers share the Prefect tests (tests/test_flows.py holds the flows in a test harness)."""

import base64
import json
import os
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
from conftest import ROOT, clone_with_outputs, digest, workspace_processes

from dsah.experiments import commands

pytestmark = pytest.mark.integration
FLOWS = ROOT / "flows"
PREFECT = [sys.executable, "-m", "prefect"]


HOLD_SLOT = """
import sys, time
from pathlib import Path
from dsah.orchestration import workspace_slot
with workspace_slot(Path(sys.argv[1]), lease=60):
    print("held", flush=True)
    sys.stdin.readline() if sys.argv[2:] == ["until-told"] else time.sleep(600)
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
        holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(one)], env=env,
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
            holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(other)], env=env,
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


def test_a_holder_that_outlives_its_server_keeps_its_record_and_the_next_run_frees_the_slot(pipeline, tmp_path):
    """Ctrl-C reaches a plain run's temporary server too, which may stop before the run releases its slot:
    the release fails, the slot stays taken in the server's database, and the next server has no lease to
    expire. The holder keeps its record then, so the next run of this machine frees the slot at once."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from dsah.orchestration import HOLDER, workspace_slot

    workspace = tmp_path / "workspace"
    with real_server(pipeline, tmp_path) as env:
        holder = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(workspace), "until-told"], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
        except BaseException:
            holder.kill()
            raise
    _, err = holder.communicate("\n", timeout=120)  # its server gone: the release fails
    assert holder.returncode != 0 and "ConnectError" in err, err[-2000:]
    assert json.loads((workspace / HOLDER).read_text())["pid"] == holder.pid
    with real_server(pipeline, tmp_path) as env, temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        start = time.monotonic()  # the same database (PREFECT_HOME), the slot still taken there
        with workspace_slot(workspace, wait=30):
            assert time.monotonic() - start < 5
    assert not (workspace / HOLDER).exists()


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


def rest(env, path: str, body: dict | None = None) -> object:
    """One call to the server's REST API from the test's own process: the waits poll every second, and a
    Python process per poll that imports Prefect's client would take a core from the runs being waited for."""
    request = urllib.request.Request(f"{env['PREFECT_API_URL']}/{path}", method="GET" if body is None else "POST",
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    if "PREFECT_API_AUTH_STRING" in env:  # what Prefect's client sends to a server that requires basic auth
        token = base64.b64encode(env["PREFECT_API_AUTH_STRING"].encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def flow_runs(env) -> list[dict]:
    return [{"id": r["id"], "state": r["state"]["type"]} for r in rest(env, "flow_runs/filter", {})]


def read_run(env, run_id: str) -> dict:
    run = rest(env, f"flow_runs/{run_id}")
    return {"state": run["state"]["type"], "work_pool_name": run["work_pool_name"], "message": run["state"]["message"]}


def read_deployment(env) -> dict:
    (deployment,) = rest(env, "deployments/filter", {})
    pool = rest(env, f"work_pools/{deployment['work_pool_name']}")
    return {"work_pool_name": pool["name"], "pool_type": pool["type"], "pull_steps": deployment["pull_steps"],
            "pool_variables": list(pool["base_job_template"]["variables"]["properties"])}


def list_artifacts(env) -> list[list[str]]:
    return [[a["key"], a["type"]] for a in rest(env, "artifacts/filter", {})]


def test_scheduled_deployment_on_a_real_server(pipeline, tmp_path):
    repo = clone_with_outputs(pipeline, tmp_path / "repo")
    with real_server(pipeline, tmp_path) as env, \
            background([sys.executable, str(FLOWS / "serve.py"), "--repo", str(repo), "--profile", "tiny",
                        "--bits", "12"], {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}):  # not 10 s per trigger
        def cli(*args):
            return prefect_cli(env, *args)

        def runs():
            return flow_runs(env)

        wait_for(lambda: sum(r["state"] == "SCHEDULED" for r in runs()) >= 1, 90, "scheduled runs")
        before = {r["id"] for r in runs()}
        start = time.monotonic()
        cli("deployment", "run", "retrain/scheduled")  # two at once: the workspace lock serializes them
        cli("deployment", "run", "retrain/scheduled", "--param", "bits=[24]")
        wait_for(lambda: [r["state"] for r in runs() if r["id"] not in before] == ["COMPLETED"] * 2, 400,
                 "two triggered runs to complete")
        elapsed = time.monotonic() - start
        listed = list_artifacts(env)
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
            wait_for(lambda: read_run(env, run_id)["state"] in ("FAILED", "CRASHED", "COMPLETED"), 120,
                     f"the run that sets {what} to end")
            messages[what] = read_run(env, run_id)
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
        with pytest.raises(urllib.error.HTTPError, match="401"):  # no credentials (env has none yet), no API
            rest(env, "flow_runs/filter", {})
        env = {**env, "PREFECT_API_AUTH_STRING": "dsah:s3cret", "PREFECT_WORKER_QUERY_SECONDS": "2"}
        subprocess.run([sys.executable, str(FLOWS / "deploy.py"), "--pool", "dsah-test", "--source", str(origin),
                        "--repo", str(repo), "--profile", "tiny", "--bits", "12", "--git-remote", str(origin)],
                       env=env, check=True)
        deployment = read_deployment(env)
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
                wait_for(lambda: read_run(env, run_id)["state"] in ("COMPLETED", "FAILED", "CRASHED"),
                         400, "the pool's run to finish")
            except AssertionError:
                print(log.read_text()[-4000:])
                raise
            elapsed = time.monotonic() - start
            run = read_run(env, run_id)
            assert run["state"] == "COMPLETED", log.read_text()[-4000:]
        assert run["work_pool_name"] == "dsah-test"
        listed = list_artifacts(env)
    assert sorted(listed) == [["dsah-retrain-metrics", "table"], ["dsah-retrain-report", "markdown"]]
    (history,) = [p for p in (repo / "history").iterdir() if p.is_dir()]
    assert history.name.endswith(run_id[-6:]) and (history / "run.json").is_file()
    assert pipeline.status(cwd=repo) == {}
    assert json.loads((repo / "models" / "promoted.json").read_text())["run_id"] == history.name
    # The version and its stage (GTO's tags) went to the git remote, after the outputs went to DVC's.
    pushed = pipeline.run("git", "ls-remote", "--tags", str(origin)).stdout
    tag = "dsah-model@v0.0.1"
    assert f"refs/tags/{tag}" in pushed and "refs/tags/dsah-model#prod#1" in pushed
    # Elsewhere: the serving model straight from the remotes, by its stage: exactly the one served here.
    remote = pipeline.dvc("remote", "list").stdout.split()[1]
    user = tmp_path / "user-model.pt"
    pipeline.dvc("artifacts", "get", str(origin), "dsah-model", "--stage", "prod", "--remote-config", f"url={remote}",
                 "-o", str(user), cwd=tmp_path)
    assert digest(user) == digest(repo / "models" / "model.pt")
    print(f"one tiny run through the work pool in {elapsed:.0f} s (trigger to COMPLETED); version {tag}")


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
