"""Retraining through DVC, for the Prefect flows: data update, queued experiments, promotion, history.

No Prefect here (flows/ wraps these steps in tasks), so every step is testable on its own. DVC runs as
a subprocess with an argument list and check=True: a failed `dvc` command fails the step, loudly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dsah.errors import DSAHError
from dsah.io import atomic_path

# -S overrides per profile: "tiny" is the tests' (seconds of training), "gpu" the paper-scale schedule.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    # A first look: a quarter of the default budget per deep method (about 1 minute each on 2 cores).
    "quick": {"train_imgnet.outer_iters": 10, "train_imgnet.samples": 4000},
    "tiny": {"train_imgnet.width": 8, "train_imgnet.outer_iters": 2, "train_imgnet.samples": 512,
             "train_lae.steps": 200, "features.extractor": "pixels", "features.size": 8},
    "gpu": {"train_imgnet.width": 64, "train_imgnet.outer_iters": 50, "train_imgnet.samples": 2000,
            "train_imgnet.epochs": 3, "train_imgnet.lr": 0.002},
}
PROMOTED = Path("models/promoted.json")
CHECKS_FILE = Path("reports/validation_checks.json")  # the validate stage's per-check outcomes


class CommandError(DSAHError):
    """A dvc or git command failed; the message carries the end of its output."""


class ValidationFailed(DSAHError):
    """The data validation stage found defects: retraining stops before any model changes."""


class CommandTimeout(CommandError):
    """A command ran past its time limit; it and every process it started were killed."""


def run(repo: Path, *args: str, timeout: float | None = None) -> str:
    """Run a command in the repository; raise CommandError with its output's tail if it fails.

    The command starts a session of its own, and everything in that session dies with it: on a timeout,
    and on any exception that reaches us while it runs (a Prefect task timeout or cancellation, Ctrl-C).
    DVC's queue workers leave the command's process group but not its session, so they die too.
    """
    # DVC starts its experiment-queue workers as `dvc ...` from PATH: make that this environment's dvc.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    process = subprocess.Popen(list(args), cwd=repo, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            # Short waits: an exception Prefect raises in this thread lands between two of them.
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            try:
                stdout, stderr = process.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    raise CommandTimeout(f"`{' '.join(args)}` ran past its {timeout:g} s limit: killed it and "
                                         "every process it started") from None
    except BaseException:
        kill_session(process.pid)
        process.wait()
        raise
    if process.returncode != 0:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-15:])
        raise CommandError(f"`{' '.join(args)}` failed with exit status {process.returncode}:\n{tail}")
    return stdout


def session_processes(sid: int) -> list[int]:
    """Live processes (not zombies) of session `sid`, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # /proc/PID/stat: "pid (comm) state ppid pgrp session ..."; comm may hold spaces.
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(entry))
    return found


def kill_session(sid: int, grace: float = 10.0) -> None:
    """SIGTERM every process of the session (once each: a second would cut its clean-up short), then
    SIGKILL what is left after `grace` seconds."""
    deadline = time.monotonic() + grace
    signalled: set[int] = set()
    while pids := session_processes(sid):
        late = time.monotonic() > deadline
        for pid in pids:
            if late or pid not in signalled:
                try:
                    os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
                except ProcessLookupError:
                    pass
                signalled.add(pid)
        time.sleep(0.2)


def dvc(repo: Path, *args: str, timeout: float | None = None) -> str:
    return run(repo, sys.executable, "-m", "dvc", *args, timeout=timeout)


def update_data(repo: Path) -> str:
    """sources + prepare + validate; a validation failure raises ValidationFailed listing the failed checks.

    The sources stage always runs and fingerprints the data, so a changed source reruns prepare by
    itself; unchanged data leaves every later stage as it was.
    """
    try:
        return dvc(repo, "repro", "validate")
    except CommandError as error:
        report = repo / CHECKS_FILE
        if report.is_file():
            failed = [f"{c['name']}: {c['details']}" for c in json.loads(report.read_text())["checks"]
                      if not c["success"]]
            if failed:
                raise ValidationFailed("data validation failed:\n  " + "\n  ".join(failed)) from error
        raise


def validation_line(repo: Path) -> str:
    """Markdown: how the last data validation went, linking its Data Docs (file://: the site is local)."""
    report = repo / CHECKS_FILE
    if not report.is_file():
        return "**Data validation**: no report (the validate stage has not run)."
    result = json.loads(report.read_text())
    passed = sum(c["success"] for c in result["checks"])
    docs = result.get("data_docs") or {}
    link = (f" ([Data Docs of the latest validation]({(report.parent / docs['latest']).resolve().as_uri()}); "
            f"[all validations]({(report.parent / docs['site']).resolve().as_uri()}))" if docs else "")
    return (f"**Data validation**: {passed} of {len(result['checks'])} checks of the {result['protocol']} "
            f"suite passed{link}.")


def experiment_name(run_id: str, method: str, bits: int) -> str:
    return f"{run_id}-{method}-{bits}"


def run_experiments(repo: Path, run_id: str, dataset: str, bits: Sequence[int], methods: Sequence[str],
                    profile: str) -> list[str]:
    """Queue one experiment per (method, bits), then run the queue; DVC runs them one after another."""
    if profile not in PROFILES:
        raise DSAHError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    overrides = [f"{key}={value}" for key, value in PROFILES[profile].items()]
    names = []
    for method in methods:
        for length in bits:
            name = experiment_name(run_id, method, length)
            sets = [f"dataset={dataset}", f"method={method}", f"bits={length}", *overrides]
            dvc(repo, "exp", "run", "--queue", "--name", name, *[a for s in sets for a in ("-S", s)])
            names.append(name)
    try:
        dvc(repo, "exp", "run", "--run-all", "--jobs", "1")
    except BaseException:
        forget_experiments(repo, names)
        raise
    failed = [row["name"] for row in queue_status(repo) if row["name"] in names and row["status"] == "Failed"]
    if failed:
        raise CommandError(f"experiments failed: {', '.join(failed)} (see `dvc queue logs NAME`)")
    return names


def forget_experiments(repo: Path, names: Sequence[str], rounds: int = 3) -> None:
    """Take a stopped run's experiments off DVC's queue, or the next run's --run-all would train them.

    Their processes are dead (run() killed them), but DVC still lists the one that was training as running:
    `queue kill --force` marks it failed, and only a later `queue remove` takes it for good (the first
    removal comes before the mark lands). An error here would hide why the run stopped: the caller re-raises
    that, and the worst case is that the next run's --run-all trains what is left.
    """
    for _ in range(rounds):
        try:
            listed = {row["name"]: row["status"] for row in queue_status(repo) if row["name"] in names}
            if not listed:
                return
            running = [name for name, status in listed.items() if status == "Running"]
            if running:
                dvc(repo, "queue", "kill", "--force", *running, timeout=120)
            dvc(repo, "queue", "remove", *listed, timeout=120)
        except CommandError:
            pass


def queue_status(repo: Path) -> list[dict[str, str]]:
    rows = []
    for line in dvc(repo, "queue", "status").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            rows.append({"name": fields[1], "status": fields[-1]})
    return rows


def experiment_metrics(repo: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """Metrics of the named experiments (via DVC's Python API), one dict per experiment."""
    import dvc.api

    from dsah.compare import metric_value

    rows = {row.get("Experiment"): row for row in dvc.api.exp_show(repo=str(repo))}
    missing = [name for name in names if name not in rows]
    if missing:
        raise CommandError(f"no results for experiments {', '.join(missing)}")
    keys = ("method", "bits", "dataset", "protocol", "mAP", "mAP@5000", "P@5000", "mAC", "val_mAP", "val_metric",
            "val_score", "train_seconds")
    results = [{"experiment": name, "rev": rows[name]["rev"], **{k: metric_value(rows[name], k) for k in keys}}
               for name in names]
    for result in results:
        result["bits"] = int(result["bits"])  # exp_show reads JSON numbers as floats
    return results


@dataclass
class Decision:
    promote: bool
    candidate: str
    candidate_score: float
    current: str | None
    current_score: float | None
    tolerance: float
    reason: str
    metric: str = "mAP"  # the protocol's validation metric the scores are (protocols.SELECTION)


def score(result: dict[str, Any]) -> float:
    """A run's validation-slice score by its protocol's own metric (val_score; older runs: val_mAP)."""
    value = result["val_score"] if result.get("val_score") is not None else result.get("val_mAP")
    if not isinstance(value, (int, float)):
        raise DSAHError(f"experiment {result.get('experiment')!r} has no validation score (val_score or val_mAP in "
                        "reports/train.json): it cannot be compared, so it is not promoted")
    return float(value)


# What makes two models comparable: their codes answer the same queries over the same kind of database.
LIKE_FOR_LIKE = ("dataset", "protocol", "bits")


def like(candidate: dict[str, Any], current: dict[str, Any]) -> bool:
    return all(candidate.get(k) == current.get(k) for k in LIKE_FOR_LIKE if k in current)  # older records: fewer


def decide(results: list[dict[str, Any]], current: dict[str, Any] | None, tolerance: float,
           allow_change: bool = False) -> Decision:
    """Promote the run's best experiment by the validation slice's score (the protocol's metric: mAP, or
    NUS-WIDE's mAP@5000) unless it is worse than the serving model's by more than `tolerance` (queries are
    never used for this choice). Only candidates like the serving model (the same dataset, protocol and
    code length) compete with it; with none, `allow_change` lets the best other one replace it, since
    scores of unlike models cannot be compared."""
    comparable = [r for r in results if current is None or like(r, current)]
    best = max(comparable or results, key=score)
    metric = best.get("val_metric") or "mAP"
    if current is None:
        return Decision(True, best["experiment"], score(best), None, None, tolerance, "no model serves yet", metric)
    if not comparable:
        serving = ", ".join(f"{k} {current.get(k)}" for k in LIKE_FOR_LIKE)
        reason = (f"allow_change: replaces the serving model ({serving}) without a score comparison" if allow_change
                  else f"no candidate is like the serving model ({serving}); allow_change lets one replace it")
        return Decision(allow_change, best["experiment"], score(best), current["experiment"], score(current),
                        tolerance, reason, metric)
    floor = score(current) - tolerance
    promote = score(best) >= floor
    reason = (f"validation {metric} {score(best):.4f} {'>=' if promote else '<'} {score(current):.4f} - "
              f"{tolerance} (the serving model's minus the tolerance)")
    return Decision(promote, best["experiment"], score(best), current["experiment"], score(current),
                    tolerance, reason, metric)


def current_model(repo: Path) -> dict[str, Any] | None:
    path = repo / PROMOTED
    return json.loads(path.read_text()) if path.is_file() else None


def promote(repo: Path, decision: Decision, result: dict[str, Any], run_id: str,
            git_remote: str | None = None) -> str:
    """Apply the experiment to the workspace, commit it with models/promoted.json, tag the commit, push the
    outputs to the DVC remote and, given `git_remote` (a remote name or URL), the tag to that git remote.

    Users check out or pull exactly the serving model with `git checkout TAG && dvc pull`.
    """
    tag = f"model-{run_id}"
    head = commit_id(repo)
    try:
        dvc(repo, "exp", "apply", decision.candidate)
        record = {**result, "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "tag": tag, "decision": asdict(decision)}
        try:  # before the commit, so that a failure is recorded in it
            dvc(repo, "push")
        except CommandError as error:  # the model is committed and tagged; the remote can catch up later
            record["push_error"] = str(error)
        with atomic_path(repo / PROMOTED) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
        run(repo, "git", "add", "-A", "--", "params.yaml", "dvc.lock", "reports", str(PROMOTED))
        run(repo, "git", "commit", "-q", "-m", f"Promote {decision.candidate}: {decision.reason}")
        run(repo, "git", "tag", tag)
    except Exception:
        # Leave the previous model serving: back to the last commit's files and outputs.
        run(repo, "git", "reset", "-q", head, "--", "params.yaml", "dvc.lock", "reports", "models")
        run(repo, "git", "checkout", "-q", head, "--", "params.yaml", "dvc.lock", "reports")
        if _tracked(repo, PROMOTED, head):
            run(repo, "git", "checkout", "-q", head, "--", str(PROMOTED))
        else:
            (repo / PROMOTED).unlink(missing_ok=True)
        dvc(repo, "checkout", "--force")
        raise
    if git_remote and "push_error" in record:  # a published tag must come with outputs others can pull
        raise CommandError(f"{tag} is committed and tagged here, not pushed to {git_remote}: "
                           f"{record['push_error']}")
    if git_remote:
        run(repo, "git", "push", "-q", git_remote, f"refs/tags/{tag}")
    return tag


def _tracked(repo: Path, path: Path, rev: str) -> bool:
    done = subprocess.run(["git", "cat-file", "-e", f"{rev}:{path}"], cwd=repo, capture_output=True, check=False)
    return done.returncode == 0


def commit_id(repo: Path) -> str:
    return run(repo, "git", "rev-parse", "--short", "HEAD").strip()


def write_history(repo: Path, history: Path, run_id: str, results: list[dict[str, Any]], decision: Decision,
                  report_md: str) -> Path:
    """Keep this run's report, params, metrics and plots under history/RUN_ID (never a DVC out), and
    rebuild history/index.md: every run so far as one table."""
    history = history if history.is_absolute() else repo / history
    staging = history / f".{run_id}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("params.yaml", "dvc.lock"):
        shutil.copy2(repo / name, staging / name)
    for name in ("metrics.json", "report.html", "report.md", "validation_checks.json"):
        if (repo / "reports" / name).is_file():
            shutil.copy2(repo / "reports" / name, staging / name)
    if (repo / "reports" / "plots").is_dir():
        shutil.copytree(repo / "reports" / "plots", staging / "plots")
    summary = {"run_id": run_id, "commit": commit_id(repo), "results": results, "decision": asdict(decision)}
    (staging / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    (staging / "summary.md").write_text(report_md)
    final = history / run_id
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    (history / "index.md").write_text(history_index(history))
    return final


def history_index(history: Path) -> str:
    """The compare view across runs: runs x metrics, newest first."""
    lines = ["# Retraining history", "", "| run | commit | experiment | method | bits | dataset | mAP | P@5000 | "
             "val mAP | promoted |", "|---" * 10 + "|"]
    for run_json in sorted(history.glob("*/run.json"), reverse=True):
        summary = json.loads(run_json.read_text())
        for r in summary["results"]:
            promoted = summary["decision"]["promote"] and summary["decision"]["candidate"] == r["experiment"]
            lines.append(f"| {summary['run_id']} | {summary['commit']} | {r['experiment']} | {r['method']} | "
                         f"{r['bits']} | {r['dataset']} | {fmt(r['mAP'])} | {fmt(r['P@5000'])} | "
                         f"{fmt(r['val_mAP'])} | {'yes' if promoted else ''} |")
    return "\n".join(lines) + "\n"


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_report(run_id: str, results: list[dict[str, Any]], decision: Decision, tag: str | None,
               validation: str = "") -> str:
    lines = [f"# Retraining run {run_id}", "",
             "| experiment | method | bits | dataset | mAP | P@5000 | mAC | validation mAP | training s |",
             "|---" * 9 + "|"]
    for r in results:
        lines.append(f"| {r['experiment']} | {r['method']} | {r['bits']} | {r['dataset']} | {fmt(r['mAP'])} | "
                     f"{fmt(r['P@5000'])} | {fmt(r['mAC'])} | {fmt(r['val_mAP'])} | {fmt(r['train_seconds'])} |")
    verdict = f"promoted as tag `{tag}`" if decision.promote else "not promoted: the serving model stays"
    lines += ["", f"**Promotion**: {decision.candidate} {verdict} ({decision.reason})."]
    lines += ["", validation] if validation else []
    return "\n".join(lines) + "\n"
