"""Promotion: the like-for-like decision between a run's experiments and the current model, applying the
winner (a git commit, a version of dvc.yaml's model artifact and its `prod` stage, both GTO's git tags), and
the run's history and report.

GTO holds which commit is which version and which version serves; it cannot hold what the decision
compared (the serving model's dataset, protocol, code length and validation score) nor why it was
made, so models/promoted.json keeps that record, committed with the model. The serving model's record is
that file at the commit the stage points to."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dsah.errors import DSAHError
from dsah.evaluation.markdown import markdown_table
from dsah.io import atomic_path
from dsah.experiments.commands import CommandError, dvc, run
from dsah.experiments.registry import ARTIFACT, STAGE, stage_commit


PROMOTED = Path("models/promoted.json")


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
    """The serving model's record: models/promoted.json at the commit of the artifact's `prod` stage (GTO),
    or, where no stage was ever assigned, the workspace's file (a promotion made before GTO held it)."""
    rev = stage_commit(repo)
    if rev is None:
        path = repo / PROMOTED
        return json.loads(path.read_text()) if path.is_file() else None
    return json.loads(run(repo, "git", "show", f"{rev}:{PROMOTED}"))


def promote(repo: Path, decision: Decision, result: dict[str, Any], run_id: str,
            git_remote: str | None = None) -> str:
    """Apply the experiment to the workspace, push its outputs to the DVC remote, commit it with
    models/promoted.json, register the commit as the next version of the model artifact and assign it the
    `prod` stage (GTO: two annotated git tags), and, given `git_remote` (a remote name or URL), push both
    tags to it. -> the version's tag, e.g. dsah-model@v0.0.3.

    Users get exactly the serving model with `dvc artifacts get . dsah-model --stage prod`, or all of its
    commit with `git checkout <version tag> && dvc pull`.
    """
    from gto.api import assign, register

    head = commit_id(repo)
    tags: list[str] = []
    committed = False
    try:
        dvc(repo, "exp", "apply", decision.candidate)
        record = {**result, "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "run_id": run_id, "artifact": ARTIFACT, "stage": STAGE, "decision": asdict(decision)}
        try:  # before the commit, so that a failure is recorded in it
            dvc(repo, "push")
        except CommandError as error:  # the model is committed and staged; the remote can catch up later
            record["push_error"] = str(error)
        with atomic_path(repo / PROMOTED) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
        run(repo, "git", "add", "-A", "--", "params.yaml", "dvc.lock", "reports", str(PROMOTED))
        run(repo, "git", "commit", "-q", "-m", f"Promote {decision.candidate}: {decision.reason}")
        committed = True
        with contextlib.redirect_stdout(io.StringIO()):  # GTO prints what it did; the tags say it
            version = register(str(repo), ARTIFACT, "HEAD", message=f"retraining run {run_id}: {decision.candidate}")
            tags.append(version.tag)
            assignment = assign(str(repo), ARTIFACT, STAGE, version=version.version,
                                message=f"retraining run {run_id}: {decision.reason}")
            tags.append(assignment.tag)
    except Exception:
        # Leave the previous model serving: back to the last commit, its files, outputs and tags.
        for tag in tags:
            run(repo, "git", "tag", "-d", tag)
        if committed:
            run(repo, "git", "reset", "-q", "--soft", head)
        run(repo, "git", "reset", "-q", head, "--", "params.yaml", "dvc.lock", "reports", "models")
        run(repo, "git", "checkout", "-q", head, "--", "params.yaml", "dvc.lock", "reports")
        if _tracked(repo, PROMOTED, head):
            run(repo, "git", "checkout", "-q", head, "--", str(PROMOTED))
        else:
            (repo / PROMOTED).unlink(missing_ok=True)
        dvc(repo, "checkout", "--force")
        raise
    if git_remote and "push_error" in record:  # a published version must come with outputs others can pull
        raise CommandError(f"{tags[0]} is committed, registered and in {STAGE} here, not pushed to {git_remote}: "
                           f"{record['push_error']}")
    if git_remote:
        run(repo, "git", "push", "-q", git_remote, *(f"refs/tags/{tag}" for tag in tags))
    return tags[0]


def _tracked(repo: Path, path: Path, rev: str) -> bool:
    done = subprocess.run(["git", "cat-file", "-e", f"{rev}:{path}"], cwd=repo, capture_output=True, check=False)
    return done.returncode == 0


def commit_id(repo: Path) -> str:
    return run(repo, "git", "rev-parse", "--short", "HEAD").strip()


def write_history(repo: Path, history: Path, run_id: str, results: list[dict[str, Any]], decision: Decision,
                  report_md: str, validation: dict[str, Any]) -> Path:
    """Keep this run's report, params, metrics, plots and data validation record under history/RUN_ID
    (never a DVC out), and rebuild history/index.md: every run so far as one table."""
    history = history if history.is_absolute() else repo / history
    staging = history / f".{run_id}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("params.yaml", "dvc.lock"):
        shutil.copy2(repo / name, staging / name)
    (staging / "validation_checks.json").write_text(json.dumps(validation, indent=2) + "\n")
    for name in ("metrics.json", "evaluation.json", "report.html", "report.md"):
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
    rows = []
    for run_json in sorted(history.glob("*/run.json"), reverse=True):
        summary = json.loads(run_json.read_text())
        for r in summary["results"]:
            promoted = summary["decision"]["promote"] and summary["decision"]["candidate"] == r["experiment"]
            rows.append((summary["run_id"], summary["commit"], r["experiment"], r["method"], r["bits"], r["dataset"],
                         fmt(r["mAP"]), fmt(r["P@5000"]), fmt(r["val_mAP"]), "yes" if promoted else ""))
    columns = ["run", "commit", "experiment", "method", "bits", "dataset", "mAP", "P@5000", "val mAP", "promoted"]
    return "\n".join(["# Retraining history", "", markdown_table(columns, rows)]) + "\n"


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_report(run_id: str, results: list[dict[str, Any]], decision: Decision, tag: str | None,
               validation: str = "") -> str:
    columns = ["experiment", "method", "bits", "dataset", "mAP", "P@5000", "mAC", "validation mAP", "training s"]
    rows = [(r["experiment"], r["method"], r["bits"], r["dataset"], *(fmt(r[k]) for k in
             ("mAP", "P@5000", "mAC", "val_mAP", "train_seconds"))) for r in results]
    lines = [f"# Retraining run {run_id}", "", markdown_table(columns, rows)]
    verdict = f"promoted: version `{tag}`, stage {STAGE}" if decision.promote else \
        "not promoted: the serving model stays"
    lines += ["", f"**Promotion**: {decision.candidate} {verdict} ({decision.reason})."]
    lines += ["", validation] if validation else []
    return "\n".join(lines) + "\n"
