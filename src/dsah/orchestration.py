"""What the Prefect flows (flows/) share: one run at a time per workspace (a Prefect global concurrency
slot), the data-update and experiment tasks, the settings a deployment pins, and the runs' options.

The one module of the library that needs the pipeline extra (prefect): nothing else in dsah imports it,
so the library imports without Prefect (tests/test_live.py). The steps themselves (DVC commands,
promotion) are dsah.experiments, testable without Prefect.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import inspect
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import filelock
from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.asyncio import AcquireConcurrencySlotTimeoutError  # also raised by .sync
from prefect.concurrency.sync import concurrency
from prefect.exceptions import MissingContextError, ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import deployment as this_deployment
from prefect.runtime import flow_run

from dsah.errors import DSAHError
from dsah.experiments import commands


# The retrain flow, as a deployment's entrypoint: relative to the checkout (flows/serve.py, flows/deploy.py).
RETRAIN_ENTRYPOINT = "flows/retrain.py:retrain"
# Seconds. A run waits this long for its workspace; the data update and the experiments are killed
# (with every process they started) past theirs. The flows take each as a parameter.
WAIT_FOR_WORKSPACE, DATA_TIMEOUT, EXPERIMENTS_TIMEOUT = 3600, 3600, 12 * 3600
# The workspace slot's lease: the holder's client renews it every 3/4 of this; when the holder dies, the
# server's repossessor frees the slot at most this long (plus its 15 s loop) after the last renewal.
LEASE_SECONDS = 120
# Which run of this machine holds the workspace's slot (host, process, flow run), while it holds it.
HOLDER = Path(".dvc/tmp/dsah-workspace-holder.json")


class WorkspaceBusy(DSAHError):
    """Another run held the workspace's concurrency slot for longer than this run would wait."""


def workspace_limit(root: Path) -> str:
    """The global concurrency limit of one workspace: the same name for every flow and deployment using it."""
    return f"dsah-workspace-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]}"


def ensure_workspace_limit(name: str) -> None:
    """Create the limit (1 slot, no slot decay) unless it exists; put an edited one back to that."""
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                return
            except ObjectAlreadyExists:  # another run created it just now
                limit = client.read_global_concurrency_limit_by_name(name)
        # Slot decay would free a live run's slot on a clock; 2 slots or an inactive limit would let runs overlap.
        if limit.limit != 1 or not limit.active or limit.slot_decay_per_second:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, active=True, slot_decay_per_second=0.0))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def free_slot_of_dead_holder(root: Path, name: str) -> str | None:
    """Free the workspace's slot where the run that holds it, by its record, is a process of this machine
    that no longer exists (SIGKILL, a crash, a reboot). Its lease would free the slot on a server whose
    lease storage outlives the holder, but Prefect keeps leases in the server's memory by default, and a
    temporary server (a plain `python flows/...py` run) takes them with it: the slot stayed taken for good,
    and every later run waited for it in vain. Returns what was freed, or None."""
    record = root / HOLDER
    try:
        holder = json.loads(record.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if holder.get("host") != socket.gethostname() or _alive(int(holder.get("pid", 0))):
        return None
    with get_client(sync_client=True) as client:
        if client.read_global_concurrency_limit_by_name(name).active_slots:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
    record.unlink(missing_ok=True)
    return (f"freed {root}'s slot ({name}): the run that held it (process {holder.get('pid')}, flow run "
            f"{holder.get('flow_run')}, since {holder.get('since')}) ended without releasing it")


@contextmanager
def _holder_lock(root: Path, wait: float) -> Iterator[None]:
    """One process of this machine at a time between reading the holder record and writing its own (else
    two new runs could both free a slot one of them has just taken)."""
    path = root / HOLDER.with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(path, timeout=wait):
            yield
    except filelock.Timeout:
        raise WorkspaceBusy(f"another run on this machine kept {path} locked for over {wait:g} s") from None


@contextmanager
def workspace_slot(root: Path, wait: float = WAIT_FOR_WORKSPACE, lease: float = LEASE_SECONDS) -> Iterator[str]:
    """Hold the workspace's only slot (a Prefect global concurrency limit) for the block: one run at a time
    per workspace, across processes, machines, deployments and flows; DVC's own lock would fail the second
    run midway. A crashed holder stops renewing its lease and the server frees the slot when it expires;
    a dead holder of this machine (by the record the holder keeps in the workspace) is freed at once."""
    name = workspace_limit(root)
    ensure_workspace_limit(name)
    run_id = flow_run.id
    holder = ConcurrencyLeaseHolder(type="flow_run", id=run_id) if run_id else None
    record = root / HOLDER
    with ExitStack() as held:
        try:
            with _holder_lock(root, wait):
                if freed := free_slot_of_dead_holder(root, name):
                    _log().warning(freed)
                # strict: a limit deleted meanwhile is an error, not a run without one.
                held.enter_context(concurrency(name, occupy=1, timeout_seconds=wait, lease_duration=lease,
                                               strict=True, holder=holder))
                record.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                              "flow_run": str(run_id) if run_id else None,
                                              "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
        except AcquireConcurrencySlotTimeoutError as error:
            raise WorkspaceBusy(f"another run held {root} (global concurrency limit {name}) for over {wait:g} s; "
                                f"`prefect gcl inspect {name}` shows it") from error
        try:
            yield name
        finally:
            # The slot first, then the record: where the release fails (the server gone, as a temporary server
            # is when Ctrl-C reaches it first), the record stays and the next run here frees the slot by it.
            held.close()
            record.unlink(missing_ok=True)


def _log():
    """The run's logger inside a flow or task, this module's outside one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


class DeploymentSettingOverridden(DSAHError):
    """A run of a deployment tried to set what only the deployment sets (its workspace, history, git remote)."""


def pin_deployment_settings(flow_function, names: tuple[str, ...]) -> None:
    """What a deployment's runs may not change: the settings named, as the deployment was created or served
    with them (its own parameters, or the flow's defaults where it sets none). A run of the deployment whose
    parameters differ is refused before it touches anything: whoever may trigger a run could otherwise point
    git at any path, delete a history folder anywhere or push to any URL. Runs outside a deployment (a
    script, a test) take their parameters as given."""
    if this_deployment.id is None:
        return
    with get_client(sync_client=True) as client:  # the record on the server, not this run's copy
        deployment = client.read_deployment(this_deployment.id)
    defaults = {k: p.default for k, p in inspect.signature(flow_function).parameters.items()}
    given = flow_run.parameters
    changed = [f"{k}={given[k]!r} (the deployment's: {deployment.parameters.get(k, defaults[k])!r})" for k in names
               if k in given and given[k] != deployment.parameters.get(k, defaults[k])]
    if changed:
        raise DeploymentSettingOverridden(
            f"deployment {deployment.name!r} fixes {', '.join(names)} where it is created; this run set "
            f"{'; '.join(changed)}. Redeploy to change them.")


# Downloads and remotes can fail transiently; defects cannot, and a timed-out attempt would time out again.
@task(retries=2, retry_delay_seconds=30, timeout_seconds=DATA_TIMEOUT,
      retry_condition_fn=lambda task, run, state: not isinstance(state.result(raise_on_failure=False),
                                                                     (commands.ValidationFailed, TimeoutError)))
def update_data(repo: Path, run_id: str, dataset: str) -> dict:
    """Fetch, prepare and validate the run's dataset (its `dataset`, not params.yaml's); the stages' output
    streams into this task's log."""
    return commands.update_data(repo, f"{run_id}-data", dataset, on_line=get_run_logger().info)


@task(task_run_name="{name}")
def train_experiment(repo: Path, name: str, sets: list[str]) -> str:
    """One experiment (`dvc exp run --temp`); its stages' output streams into this task's log as they run."""
    commands.run_experiment(repo, name, sets, on_line=get_run_logger().info)
    return name


def run_experiments(repo: Path, run_id: str, plan: list[tuple[str, int, list[str]]],
                    timeout: float = EXPERIMENTS_TIMEOUT) -> list[str]:
    """One task run per experiment of the plan (commands.plan_experiments), named by the run, method and length."""
    return run_named_experiments(
        repo, {commands.experiment_name(run_id, method, length): sets for method, length, sets in plan}, timeout)


def run_named_experiments(repo: Path, planned: dict[str, list[str]], timeout: float = EXPERIMENTS_TIMEOUT) -> list[str]:
    """One task run per experiment (name -> its -S values), one after another (they share the workspace),
    `timeout` seconds for them all. A failed one does not stop the others, and the call fails naming each."""
    deadline, failed = time.monotonic() + timeout, []
    for name, sets in planned.items():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if train_experiment.with_options(timeout_seconds=left)(repo, name, sets, return_state=True).is_failed():
            failed.append(name)
    if time.monotonic() >= deadline:
        raise commands.CommandTimeout(f"the experiments ran past their {timeout:g} s limit (experiments_timeout)")
    if failed:
        raise commands.CommandError(f"experiments failed: {', '.join(failed)} (their task runs' logs say why)")
    return list(planned)


def add_run_arguments(parser: argparse.ArgumentParser, bits: list[int]) -> None:
    """The flow's parameters as options (this script, the served and the work-pool deployments)."""
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--bits", type=int, nargs="+", default=bits)
    parser.add_argument("--methods", nargs="+", default=["dsah"])
    parser.add_argument("--profile", default="default", choices=sorted(commands.PROFILES))
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--git-remote", help="push each promotion's tag to this git remote (name or URL)")
    parser.add_argument("--allow-change", action="store_true",
                        help="let a model of another dataset, protocol or code length replace the serving one")
    add_time_arguments(parser)


def add_time_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait-for-workspace", type=float, default=WAIT_FOR_WORKSPACE,
                        help="seconds to wait while another run holds the workspace, then fail")
    parser.add_argument("--data-timeout", type=float, default=DATA_TIMEOUT,
                        help="seconds for the data update; past them its processes are killed and the run fails")
    parser.add_argument("--experiments-timeout", type=float, default=EXPERIMENTS_TIMEOUT,
                        help="seconds for training all the experiments; past them, the same")


def run_parameters(args: argparse.Namespace, repo: str) -> dict:
    return {"repo": repo, "dataset": args.dataset, "bits": args.bits, "methods": args.methods,
            "profile": args.profile, "tolerance": args.tolerance, "git_remote": args.git_remote,
            "allow_change": args.allow_change, "wait_for_workspace": args.wait_for_workspace,
            "data_timeout": args.data_timeout, "experiments_timeout": args.experiments_timeout}
