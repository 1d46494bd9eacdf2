"""The benchmark scripts run end to end (tiny sizes, CPU) and write the JSON they promise."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from fixtures import has_row, make_cifar_jpg_archive


def run(*args):
    return subprocess.run([sys.executable, *map(str, args)], check=True, capture_output=True, text=True, cwd=ROOT)


def test_gpu_benchmark_tiny_cpu_run(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 6, 2)
    out = tmp_path / "result.json"
    run("bench/gpu_train.py", "--archive", archive, "--out", out, "--profile", "tiny", "--bits", "8",
        "--methods", "dsah", "adsh", "--queries-per-class", "2", "--validation", "10")
    result = json.loads(out.read_text())
    assert [(r["method"], r["bits"]) for r in result["runs"]] == [("dsah", 8), ("adsh", 8)]
    for r in result["runs"]:
        assert 0 <= r["mAP"] <= 1 and 0 <= r["P@5000"] <= 1 and r["train_seconds"] > 0
    assert set(result["means"]) == {"dsah/8", "adsh/8"}
    assert result["machine"]["torch"] and result["machine"]["commit"]


def test_code_update_benchmark_small(tmp_path):
    out = tmp_path / "update.json"
    run("bench/code_update.py", "--out", out, "--n", "3000", "--m", "200", "--bits", "16", "--repeats", "1")
    result = json.loads(out.read_text())
    assert result["n"] == 3000 and result["seconds"] > 0 and result["labels"].startswith("synthetic")


def test_search_benchmark_small(tmp_path):
    out = tmp_path / "search.json"
    run("bench/search.py", "--out", out, "--n", "3000", "--queries", "20", "--k", "10", "--nlist", "16",
        "--nprobe", "2", "16")
    result = json.loads(out.read_text())
    assert result["codes"] == 3000 and result["exact"]["same_distances_as_faiss"] is True
    assert result["exact"]["ours_queries_per_second"] > 0 and result["exact"]["faiss_IndexBinaryFlat_queries_per_second"] > 0
    recalls = [r["recall@10"] for r in result["approximate"]["runs"]]
    assert all(0 <= r <= 1 for r in recalls) and recalls[-1] == 1.0  # all 16 lists probed: exact
    assert result["index"]["bytes_per_code"] < 8.1


def test_scaling_benchmark_quick(tmp_path):
    out = tmp_path / "scaling.json"
    run("bench/scaling.py", "--out", out, "--quick")
    result = json.loads(out.read_text())
    assert [(r["processes"], r["threads_per_process"]) for r in result["network"]][:2] == [(1, 1), (2, 1)]
    assert all(r["images_per_second"] > 0 for r in result["network"])
    for part in ("context", "update"):
        model = result["code_model"][part]
        assert min(model[k] for k in "abde") >= 0 and len(model["predicted"]) == len(result["code_update"])
    assert {r["shares"] for r in result["code_update"]} == {1, 2}
    nus = result["predictions"]["nuswide21_48bits_1_devices"]
    assert nus["n"] == 193_734 and nus["training_seconds"] == nus["outer_iters"] * (
        nus["network_seconds_per_iteration"] + nus["code_update_seconds_per_iteration"])


def test_streaming_benchmark_tiny_cpu_run(tmp_path):
    """bench/gpu_stream.py, made for a GPU (its sync check is on only there), runs on the CPU too."""
    out = tmp_path / "stream.json"
    run("bench/gpu_stream.py", "--images", "1200", "--size", "32", "--samples", "128", "--iterations", "1",
        "--width", "4", "--out", out)
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["results"]] == ["resident", "streamed"]
    assert all(r["images_per_second"] > 0 and r["device"] == "cpu" for r in result["results"])


def test_label_codes_benchmark_tiny_run(tmp_path, shared_data):
    """bench/label_codes.py trains the LAE on a protocol's database labels and scores its label codes as
    codes: the oracle (the queries' own label codes) above chance, a mistaken share of queries below it."""
    out = tmp_path / "label_codes.json"
    run("bench/label_codes.py", "--out", out, "--protocols", "nuswide21-reduced", "cifar10-scenes", "--bits", "8",
        "--seeds", "0", "--steps", "40", "--error", "0.5", "--label-errors", "0.5", "--scenes-size", "50", "400")
    rows = json.loads(out.read_text())["rows"]
    assert [(r["protocol"], r["targets"]) for r in rows] == [
        ("nuswide21-reduced", "binary"), ("nuswide21-reduced", "graded"),
        ("cifar10-scenes", "binary"), ("cifar10-scenes", "graded")]
    for r in rows:
        assert r["chance_mAP"] < r["perturbed_0.5_mAP"] < r["oracle_mAP"] <= 1
        assert r["chance_mAP"] < r["flipped_0.5_mAP"] < r["oracle_mAP"]
        assert r["one_label_apart_pairs"] > 0 and 0 <= r["one_label_apart_same_code"] <= 1
    assert has_row(out.with_suffix(".md").read_text(), "cifar10-scenes", "8", "graded", "1")


def test_study_record_gathers_sittings_one_row_per_run_under_the_records_names(tmp_path):
    """bench/study_record.py: several study folders' runs.csv as one record, leading with its columns."""
    import pandas as pd

    sweep, ladder = tmp_path / "targets_quick", tmp_path / "ladder_quick"
    for folder, rows in ((sweep, [("swp-scenes-12-defaults-s0-quick", "defaults", None, 0.66),
                                  ("swp-scenes-12-targets_graded-s0-quick", "targets_graded", None, 0.67)]),
                         (ladder, [("abl-scenes-12-adsh_init_lam_eta-s0-quick", "adsh_init_lam_eta",
                                    "abl-scenes-12-adsh_init_lam_eta-s0-quick", 0.65),
                                   ("abl-scenes-12-dsah_no_mu-s0-quick", "dsah_no_mu",
                                    "abl-scenes-12-adsh_init_lam_eta-s0-quick", 0.65)])):
        folder.mkdir()
        pd.DataFrame([{"dataset": "cifar10-scenes", "bits": 12, "seed": 0, "mAP": m, "experiment": name,
                       "variant": variant, "runs_as": shared, "method": "dsah"} for name, variant, shared, m in rows]
                     ).to_csv(folder / "runs.csv", index=False)
        pd.DataFrame([{"dataset": "cifar10-scenes", "bits": 12, "metric": "mAP", "variant": rows[0][1],
                       "reference": None}]).to_csv(folder / "summary.csv", index=False)
    run("bench/study_record.py", "--studies", sweep, ladder, "--out", tmp_path / "record")
    runs = pd.read_csv(tmp_path / "record" / "runs.csv")
    assert list(runs.columns[:5]) == ["dataset", "protocol", "chance_mAP", "method", "variant"]
    assert "NDCG@1000" in runs and runs["NDCG@1000"].isna().all()  # a column the sittings lack stays empty
    assert list(runs["variant"]) == ["dsah", "targets_graded", "adsh_init_lam_eta"]  # dsah_no_mu: the same run
    assert list(runs["study"]) == ["targets_quick"] * 2 + ["ladder_quick"] and set(runs["profile"]) == {"quick"}
    summary = pd.read_csv(tmp_path / "record" / "summary.csv")
    assert list(summary["variant"]) == ["dsah", "adsh_init_lam_eta"] and list(summary["study"]) == [
        "targets_quick", "ladder_quick"]


def test_serve_load_benchmark_tiny_run_beside_a_commits_server(tmp_path):
    """bench/serve_load.py starts the real `dsah serve`, from this checkout and from a commit's worktree,
    and both answer every request of its clients."""
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 10, 3)
    out = tmp_path / "serve_load.json"
    worktrees = ["git", "worktree", "list", "--porcelain"]
    before = subprocess.run(worktrees, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    run("bench/serve_load.py", "--archive", archive, "--database", "60", "--queries", "10", "--bits", "8",
        "--clients", "10", "--requests", "4", "--k", "5", "--baseline", "HEAD", "--out", out)
    result = json.loads(out.read_text())
    assert (result["clients"], result["requests"], result["answered"], result["errors"]) == (10, 40, 40, 0)
    assert result["error_examples"] == [] and result["queries_per_second"] > 0
    for kind in ("all", "upload", "id"):
        latency = result["latency"][kind]
        assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert list(result["servers"]) == ["baseline HEAD", "current"]
    baseline = result["servers"]["baseline HEAD"]
    assert baseline["source"] == "commit HEAD" and [r["answered"] for r in baseline["runs"]] == [40]
    assert result["index"]["codes"] == 60 and result["server"]["threads"] >= 1 and result["machine"]["commit"]
    table = out.with_suffix(".md").read_text()
    assert has_row(table, "current", "40", "10", "0") and has_row(table, "baseline HEAD", "40", "10", "0")
    assert subprocess.run(worktrees, capture_output=True, text=True, cwd=ROOT, check=True).stdout == before


def test_frontier_benchmark_tiny_run_and_its_check(tmp_path):
    archive = make_cifar_jpg_archive(tmp_path / "c.tar.gz", 6, 2)
    out = tmp_path / "frontier.json"
    tiny = "backbone=cifar_resnet,input_size=0,trunk_lr=1.0,width=8,outer_iters=2,samples=16,batch=8,eval_every=0"
    run("bench/frontier.py", "--archive", archive, "--out", out, "--bits", "8", "--budgets", "0.5", "1",
        "--recipes", "--recipe", f"plain:{tiny},test_flips=false", "--recipe", f"whitened:{tiny},backbone=cifar_whitened,test_flips=true",
        "--queries-per-class", "2", "--validation", "10")
    result = json.loads(out.read_text())
    assert [(r["recipe"], r["budget"], r["outer_iters"]) for r in result["runs"]] == [
        ("plain", 0.5, 1), ("whitened", 0.5, 1), ("plain", 1.0, 2), ("whitened", 1.0, 2)]
    assert "mAP_with_test_flips" in result["runs"][0] and "mAP_without_test_flips" in result["runs"][1]
    printed = run("bench/frontier_check.py", out).stdout.splitlines()
    assert len(printed) == 5 and printed[2].split()[2] == "whitened"
    assert printed[1].split()[-3:] == ["1.00", "1.000", "dsah"]  # each budget's first recipe is the reference

    # Another file's runs (more seeds) merge into the same medians; the chart has a line per recipe and length.
    more = dict(result, runs=[dict(r, seed=1, mAP=r["mAP"] + 0.1) for r in result["runs"]])
    (tmp_path / "more.json").write_text(json.dumps(more))
    printed = run("bench/frontier_check.py", out, tmp_path / "more.json", "--svg", tmp_path / "f.svg").stdout
    plain = next(line.split() for line in printed.splitlines() if line.split()[:3] == ["8", "1", "plain"])
    assert plain[3] == "2" and float(plain[4]) == pytest.approx(result["runs"][2]["mAP"] + 0.05, abs=1e-3)
    svg = (tmp_path / "f.svg").read_text()
    assert svg.startswith("<svg") and "plain, 8 bits" in svg and "whitened, 8 bits" in svg
    clash = dict(result, recipes=dict(result["recipes"], plain={"width": 16}))  # another recipe, the same name
    (tmp_path / "clash.json").write_text(json.dumps(clash))
    refused = subprocess.run([sys.executable, "bench/frontier_check.py", str(out), str(tmp_path / "clash.json")], cwd=ROOT,
                             capture_output=True, text=True)
    assert refused.returncode != 0 and "recipe 'plain' differs between the files" in refused.stderr

    # Choosing settings: every method in turn per recipe, the validation slice only (queries never scored).
    chosen = tmp_path / "chosen.json"
    run("bench/frontier.py", "--archive", archive, "--out", chosen, "--bits", "8", "--budgets", "1", "--recipes",
        "--recipe", f"plain:{tiny}", "--eval-every", "1", "--methods", "adsh", "dsah", "--validation-only",
        "--queries-per-class", "2", "--validation", "10")
    result = json.loads(chosen.read_text())
    assert [r["method"] for r in result["runs"]] == ["adsh", "dsah"] and result["scored"] == "validation slice only"
    assert all("mAP" not in r and len(r["curve"]) == 2 and r["curve"][-1][1] == r["val_mAP"] for r in result["runs"])
    printed = run("bench/frontier_check.py", chosen, "--metric", "val_mAP", "--svg", tmp_path / "v.svg").stdout
    assert [line.split()[-1] for line in printed.splitlines()[1:3]] == ["adsh", "dsah"]
    assert "plain, adsh, 8 bits" in (tmp_path / "v.svg").read_text()
