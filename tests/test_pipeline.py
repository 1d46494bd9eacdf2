"""End to end: the real pipeline (`dvc repro`) on CIFAR-10 in a temporary git clone of the project.

One pipeline run is built per test session (the `pipeline` fixture) and shared by these tests.
"""

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, clone_with_outputs
from PIL import Image

pytestmark = pytest.mark.integration
STAGES = ("sources", "prepare", "images", "validate", "plan", "features", "train_lae", "train", "encode", "additions", "index",
          "evaluate", "report")


def ran(out: str) -> set[str]:
    return {stage for stage in STAGES if f"Running stage '{stage}'" in out}


def test_pipeline_prepares_validates_and_trains_on_cifar10(pipeline):
    for stage in STAGES:
        assert f"Running stage '{stage}'" in pipeline.first_run
    report = json.loads((pipeline.path / "reports" / "validation.json").read_text())
    assert report == {"success": True, "passed": 30, "failed": 0}  # the stored cifar10 suite, every check
    meta = json.loads((pipeline.path / "data" / "prepared" / "meta.json").read_text())
    assert meta["counts"] == {"rows": 60_000, "queries": 1_000, "database": 59_000, "validation": 1_000}
    # The source's checksum, not its path, is the sources stage's output: dvc.lock changes with the data.
    sha256 = subprocess.run(["sha256sum", str(pipeline.env["DSAH_DATA_HOME"] + "/cifar10-jpg.tar.xz")],
                            check=True, capture_output=True, text=True).stdout.split()[0]
    fingerprint = (pipeline.path / "data" / "sources.json").read_text()
    assert json.loads(fingerprint) == {"dataset": "cifar10",
                                       "sources": {"images": {"name": "cifar10-jpg.tar.xz", "sha256": sha256}}}
    assert meta["sources"] == json.loads(fingerprint)["sources"] and pipeline.env["DSAH_DATA_HOME"] not in fingerprint
    lock = yaml.safe_load((pipeline.path / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    assert lock["stages"]["prepare"]["params"]["params.yaml"]["prepare.cifar10"] == {"archive": "", "subset": 0}
    # DVC's metrics: the headline numbers, then DVCLive's progress; the other reports are plain files.
    shown = json.loads(pipeline.dvc("metrics", "show", "--json").stdout)[""]["data"]  # "": the workspace
    assert list(shown) == ["reports/metrics.json", "reports/live/metrics.json"]
    scores = json.loads((pipeline.path / "reports" / "metrics.json").read_text())
    assert list(scores) == ["mAP", "mAP@5000", "P@5000", "mAC", "val_mAP", "train_seconds", "mAP_index_ties"]
    assert shown["reports/metrics.json"]["data"] == scores
    record = json.loads((pipeline.path / "reports" / "evaluation.json").read_text())  # what the report reads
    assert {key: record[key] for key in scores} == scores
    assert record["bits"] == 12 and record["method"] == "dsah" and record["dataset"] == "cifar10"
    assert record["backbone"] == "cifar_resnet" and record["input_px"] == 32  # what the network saw
    assert 0.1 < scores["mAP"] <= 1 and record["queries"] == 1000 and record["database"] == 59_000
    # Training time is the train stage's whole time, the loop's own beside it; tie-aware mAP beside by-index.
    trained = json.loads((pipeline.path / "reports" / "train.json").read_text())
    assert trained["train_seconds"] > trained["loop_seconds"] > 0 and trained["resumed_seconds"] == 0
    assert abs(scores["mAP"] - scores["mAP_index_ties"]) < 0.05
    codes = np.load(pipeline.path / "models" / "database_codes.npy")
    assert codes.shape == (59_000, 12) and set(np.unique(codes)) == {-1, 1}
    assert not (pipeline.path / "models" / "checkpoints" / "train.pt").exists()
    assert "features: not used by the chosen method (skipped)" in pipeline.first_run


def test_plain_dvc_repro_is_the_first_command_a_fresh_clone_needs(pipeline):
    """The shared run is `dvc repro` in a fresh clone, nothing before it: no additions store there (and no
    remote to pull one from) means no additions, so the `additions` stage starts the empty store the
    committed dvc.lock records, and the index holds the database alone."""
    assert "additions: 0 added image(s), 0 removed database image(s) in data/additions (none yet: an empty " \
           "store, started now)" in pipeline.first_run
    assert "index: 59000 codes of 12 bits (0 added, 0 removed by users)" in pipeline.first_run
    store = sorted(p.relative_to(pipeline.path / "data" / "additions").as_posix()
                   for p in (pipeline.path / "data" / "additions").rglob("*"))
    assert store == ["added.csv", "removed.csv"]
    lock = yaml.safe_load((pipeline.path / "dvc.lock").read_text())["stages"]
    committed = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    assert lock["additions"]["outs"] == committed["additions"]["outs"]
    assert [d for d in lock["index"]["deps"] if d["path"] == "data/additions"] == committed["additions"]["outs"]


def test_second_repro_reruns_nothing_but_the_sources_check(pipeline):
    out = pipeline.dvc("repro").stdout
    assert ran(out) == {"sources"} and "Stage 'prepare' didn't change, skipping" in out
    assert json.loads(pipeline.dvc("status", "--json").stdout) == {"sources": ["always changed"]}


def test_a_params_change_reruns_only_what_it_touches(pipeline):
    with pipeline.params(seed=7):  # the training seed never touches the data stages
        assert set(pipeline.status()) == {"train_lae", "train", "report"}
    with pipeline.params(bits=24):
        assert set(pipeline.status()) == {"train_lae", "train", "report"}
    with pipeline.params(method="adsh"):  # train_lae and features follow once plan has rerun
        assert set(pipeline.status()) == {"plan", "train", "index", "evaluate", "report"}
    with pipeline.params(**{"methods.dsah.eta": 0.0}):  # plan checks it (and its plan files stay the same)
        assert set(pipeline.status()) == {"plan", "train", "report"}
    with pipeline.params(**{"methods.adsh.gamma": 1.0, "methods.itq.iterations": 3}):  # other methods' knobs
        assert pipeline.status() == {}
    with pipeline.params(**{"evaluate.map_topk": 100}):
        assert set(pipeline.status()) == {"evaluate"}
    with pipeline.params(**{"prepare.cifar10__mosaic.queries": 10}):  # another dataset's knob
        assert pipeline.status() == {}
    with pipeline.params(split_seed=1):  # the report shows it; the data changes reach the rest on rerun
        assert set(pipeline.status()) == {"prepare", "report"}
    with pipeline.params(**{"images.size.cifar10": 48}):  # the store only: never the split
        assert set(pipeline.status()) == {"images", "validate"}
    with pipeline.params(**{"images.size.coco": 128}):  # another dataset's size
        assert set(pipeline.status()) == set()
    with pipeline.params(**{"prepare.validation_size": 500}):
        assert set(pipeline.status()) == {"prepare", "validate"}
    assert pipeline.status() == {}


def test_push_then_pull_into_a_fresh_clone_at_another_path_reruns_nothing(pipeline, tmp_path):
    clone = clone_with_outputs(pipeline, tmp_path / "clone")
    assert (clone / "data" / "images" / "images.npy").stat().st_size > 180_000_000
    assert pipeline.status(cwd=clone) == {}
    out = pipeline.dvc("repro", cwd=clone).stdout
    assert ran(out) == {"sources"}  # it looked, found the same data, and nothing else ran
    assert pipeline.run("git", "status", "--porcelain", cwd=clone).stdout == ""


def test_validate_stage_fails_and_names_a_planted_defect(pipeline, tmp_path):
    planted = tmp_path / "prepared"
    shutil.copytree(pipeline.path / "data" / "prepared", planted)
    table = (planted / "split.csv").read_text().splitlines()
    # Turn a database image into a second copy of the first query's row.
    query_row = next(line for line in table[1:] if ",query," in line)
    (planted / "split.csv").write_text("\n".join(table[:-1] + [query_row]) + "\n")
    context = shutil.copytree(pipeline.path / "gx", tmp_path / "gx")  # so its results and Data Docs stay out of the shared run
    result = pipeline.run(sys.executable, "stages/validate.py", "--prepared", str(planted), "--images",
                          "data/images", "--params",
                          "params.yaml", "--context", str(context), "--report", str(tmp_path / "validation.json"),
                          "--checks", str(tmp_path / "checks.json"), "--passed", str(tmp_path / "validated.json"),
                          check=False)
    assert result.returncode == 1
    assert json.loads((tmp_path / "validation.json").read_text())["success"] is False
    names = [c["name"] for c in json.loads((tmp_path / "checks.json").read_text())["checks"] if not c["success"]]
    assert {"id_unique", "image_unique"} <= set(names)
    assert all(f"FAILED {name}:" in result.stderr for name in names)
    assert not (tmp_path / "validated.json").exists()


def test_encode_can_give_database_codes_through_the_network(pipeline, tmp_path):
    """encode.database: network codes every database image as sign(F(x)), as images added later get."""
    params = yaml.safe_load((pipeline.path / "params.yaml").read_text())
    params["encode"]["database"] = "network"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline.run(sys.executable, "stages/encode.py", "--prepared", "data/prepared", "--images", "data/images", "--params",
                 str(tmp_path / "params.yaml"), "--model", "models/model.pt", "--features", "data/features", "--database-codes",
                 "models/database_codes.npy", "--out", str(tmp_path / "codes"))
    from dsah.codes import load_codes
    ids, codes = load_codes(tmp_path / "codes" / "database.npz")
    learned_ids, learned = load_codes(pipeline.path / "data" / "codes" / "database.npz")
    assert ids == learned_ids and codes.shape == learned.shape == (59_000, 12)
    assert not np.array_equal(codes, learned)  # a different source of codes, same layout
    params["encode"]["database"] = "everything"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    bad = pipeline.run(sys.executable, "stages/encode.py", "--prepared", "data/prepared", "--images", "data/images", "--params",
                       str(tmp_path / "params.yaml"), "--model", "models/model.pt", "--features", "data/features", "--database-codes",
                       "models/database_codes.npy", "--out", str(tmp_path / "codes2"), check=False)
    assert bad.returncode == 2 and "encode.database: 'everything' is unknown; allowed: one of learned, network" in bad.stderr


def test_switching_method_reruns_only_what_the_new_method_uses(pipeline, tmp_path):
    clone = clone_with_outputs(pipeline, tmp_path / "clone")

    def repro(method, *targets):
        params = yaml.safe_load((clone / "params.yaml").read_text())
        params["method"] = method
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = pipeline.dvc("repro", *targets, cwd=clone).stdout
        return ran(out), out

    stages, out = repro("itq")  # a classic method: features are extracted, the LAE is skipped
    assert stages == {"sources", "plan", "features", "train_lae", "train", "encode", "index", "evaluate", "report"}
    assert "train_lae: the chosen method does not use the label auto-encoder (skipped)" in out
    assert "train: itq 12 bits on pixels (8x8 downsampled, 192-d)" in out
    stages, _ = repro("sdh")  # same features, same (skipped) LAE: neither reruns
    assert stages == {"sources", "plan", "train", "encode", "index", "evaluate", "report"}
    record = json.loads((clone / "reports" / "evaluation.json").read_text())
    assert record["method"] == "sdh" and record["features"].startswith("pixels") and record["train_size"] == 2000
    # Back to images: the features become a marker again (up to that stage: training is tested elsewhere).
    stages, out = repro("hashnet", "features")
    assert stages == {"sources", "plan", "features"} and "train: " not in out
    assert not (clone / "data" / "features" / "database.npy").exists()


def test_train_stage_starts_data_parallel_processes_with_torchrun(pipeline, tmp_path):
    """train_imgnet.processes: 2 makes the train stage start itself under torchrun (gloo on CPU); rank 0
    writes the outputs, and DVC records them like any other run."""
    clone = clone_with_outputs(pipeline, tmp_path / "clone")
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["train_imgnet"]["processes"] = 2
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = pipeline.dvc("repro", "train", cwd=clone)
    assert "train: starting 2 processes with torchrun" in out.stdout
    assert "distributed: 2 processes (gloo, CPU)" in out.stderr
    metrics = json.loads((clone / "reports" / "train.json").read_text())
    assert metrics["processes"] == 2 and metrics["code_resyncs"] == 0 and metrics["val_mAP"] > 0
    assert np.load(clone / "models" / "database_codes.npy").shape == (59_000, 12)
    assert not (clone / "models" / "checkpoints" / "train.pt").exists()
    assert "train" not in pipeline.status(cwd=clone)


# What dvc.lock promises ------------------------------------------------------------------------------
def stages_importing(module: str) -> set[str]:
    from dsah.provenance import import_closure

    return {stage for stage in STAGES if (ROOT / module) in import_closure(ROOT / "stages" / f"{stage}.py")}


@pytest.mark.parametrize("module", ["src/dsah/codes.py", "src/dsah/training/loop.py", "src/dsah/data/table.py",
                                    "src/dsah/evaluation/figures.py", "src/dsah/data/validation.py", "src/dsah/data/sources.py"])
def test_editing_a_module_changes_exactly_the_stages_that_import_it(pipeline, module):
    path = pipeline.path / module
    original = path.read_text()
    path.write_text(original + "# an edit\n")
    try:
        changed = {stage for stage, why in pipeline.status().items()
                   if {"changed deps": {module: "modified"}} in why}
    finally:
        path.write_text(original)
    assert changed == stages_importing(module) and changed
    assert pipeline.status() == {}


def test_a_failed_validation_stops_training(pipeline, tmp_path):
    """The gate: a defect in the prepared data (as a buggy prepare would write it) fails validate, and
    `dvc repro train` and `dvc exp run` stop there, naming the failed checks; nothing is trained."""
    clone = clone_with_outputs(pipeline, tmp_path / "clone")
    model = (clone / "models" / "model.pt").read_bytes()
    table = clone / "data" / "prepared" / "split.csv"
    lines = table.read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if ",database,False," in line)
    lines[row] = lines[row].replace(",database,False,", ",query,False,")  # 1,001 queries
    table.write_text("\n".join(lines) + "\n")
    pipeline.dvc("commit", "--force", "prepare", cwd=clone)
    failed = pipeline.dvc("repro", "train", cwd=clone, check=False)
    assert failed.returncode != 0
    assert "FAILED query_count: observed 1001; expected 1000 (queries)" in failed.stderr
    assert "Running stage 'train'" not in failed.stdout and "Running stage 'validate'" in failed.stdout
    assert not (clone / "data" / "validated.json").exists()
    assert (clone / "models" / "model.pt").read_bytes() == model
    experiment = pipeline.dvc("exp", "run", "-S", "bits=16", cwd=clone, check=False)  # an experiment stops too
    assert experiment.returncode != 0 and "FAILED query_count" in experiment.stderr
    assert "Running stage 'train'" not in experiment.stdout


def test_sources_rerun_prepare_only_when_the_data_changes(pipeline, tmp_path):
    """The same archive at another path reruns only the sources stage; a different archive puts the two
    stages that read it, prepare and images, out of date (and with them everything after)."""
    clone = clone_with_outputs(pipeline, tmp_path / "clone")
    archive = Path(pipeline.env["DSAH_DATA_HOME"]) / "cifar10-jpg.tar.xz"

    def repro(home: Path, *targets: str) -> set[str]:
        env = {**pipeline.env, "DSAH_DATA_HOME": str(home)}
        return ran(subprocess.run([sys.executable, "-m", "dvc", "repro", *targets], cwd=clone, env=env, check=True,
                                  capture_output=True, text=True).stdout)

    (tmp_path / "moved").mkdir()
    shutil.copy(archive, tmp_path / "moved" / archive.name)
    assert repro(tmp_path / "moved") == {"sources"}
    assert pipeline.run("git", "diff", "--quiet", "dvc.lock", cwd=clone, check=False).returncode == 0

    (tmp_path / "changed").mkdir()  # the same images, one of them mirrored
    with tarfile.open(archive) as source, tarfile.open(tmp_path / "changed" / "cifar10-jpg.tar", "w") as copy:
        for member in source:
            data = source.extractfile(member).read() if member.isfile() else None
            if member.name.endswith("train/cat/0000.jpg"):
                image = Image.open(io.BytesIO(data)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=95)
                data, member.size = buffer.getvalue(), len(buffer.getvalue())
            copy.addfile(member, io.BytesIO(data) if data is not None else None)
    assert repro(tmp_path / "changed", "sources") == {"sources"}  # the rest is DVC's: what is out of date reruns
    assert json.loads((clone / "data" / "sources.json").read_text())["sources"]["images"]["name"] == "cifar10-jpg.tar"
    changed = {"changed deps": {"data/sources.json": "modified"}}
    assert pipeline.status(cwd=clone) == {"prepare": [changed], "images": [changed]}
