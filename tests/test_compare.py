"""The Tab.1 layout from a table of runs (no DVC needed): only like runs share a cell, seeds are averaged
with n and sd, one table set per dataset and protocol, seconds, setup, plots, the FATH note."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from fixtures import has_row
from PIL import Image

from dsah.experiments.compare import (COLUMNS, RECORD_FILE, comparison, fig3_bits, kept_heatmaps, method_order,
                                      param_values, run_settings, run_values, setup_table, write_comparison)
from dsah.evaluation.figures import correlation_heatmap, png_bytes
from dsah.evaluation.metrics import bit_correlation

DSAH = {"train_imgnet.lr": 0.002, "train_imgnet.epochs": 3, "methods.dsah.gamma": 200}


def run(method="dsah", bits=12, seed=0, mAP=0.7, dataset="cifar10", protocol="cifar10", settings=None, **extra):
    features = ("images (cifar_resnet width 16, from scratch)" if method == "dsah"
                else "efficientnet_lite0 (ImageNet-pretrained, 96 px, 1280-d)")
    return {"experiment": f"{method}-{bits}-{seed}-{mAP}", "rev": "abc", "method": method, "bits": bits,
            "dataset": dataset, "protocol": protocol, "mAP": mAP, "mAP@5000": mAP - 0.05, "P@5000": mAP - 0.1,
            "train_seconds": 10.0 * bits, "features": features, "train_size": 40000 if method == "dsah" else 58000,
            "seed": seed, "settings": json.dumps(settings if settings is not None else
                                                 (DSAH if method == "dsah" else {"features.size": 96}),
                                                 sort_keys=True), **extra}


def table(rows):
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_methods_follow_the_papers_order():
    assert method_order(["dsah", "itq", "hashnet", "ksh", "adsh"]) == ["ksh", "itq", "hashnet", "adsh", "dsah"]


def test_only_seeds_are_averaged_and_other_settings_get_their_own_row():
    faster = dict(DSAH, **{"train_imgnet.lr": 0.004})
    runs = table([run(seed=0, mAP=0.70), run(seed=1, mAP=0.72), run(seed=2, mAP=0.74),  # three seeds: one cell
                  run(settings=faster, mAP=0.60),  # another learning rate: another row
                  run(method="itq", bits=24, mAP=0.3), run(bits=32, mAP=0.75)])
    mAP = comparison(runs, "mAP", with_paper=False)
    assert list(mAP.index) == ["itq (ours)", "dsah (ours; train_imgnet.lr=0.002)", "dsah (ours; train_imgnet.lr=0.004)"]
    assert list(mAP.columns) == ["12 bits", "24 bits", "32 bits"]
    assert mAP.loc["dsah (ours; train_imgnet.lr=0.002)", "12 bits"] == "0.720 ± 0.020 (n=3)"
    assert mAP.loc["dsah (ours; train_imgnet.lr=0.004)", "12 bits"] == "0.600"
    assert mAP.loc["dsah (ours; train_imgnet.lr=0.002)", "32 bits"] == "0.750"
    assert mAP.loc["itq (ours)", "24 bits"] == "0.300" and mAP.loc["itq (ours)", "12 bits"] == "–"
    with_paper = comparison(runs, "mAP")
    assert list(with_paper.columns) == ["12 bits", "24 bits", "32 bits", "36 bits", "48 bits"]
    assert with_paper.loc["DSAH (paper)", "48 bits"] == "0.948" and with_paper.loc["DSAH (paper)", "32 bits"] == "–"


def test_a_run_made_before_a_setting_existed_counts_as_that_settings_former_value():
    """Graded targets came after the first runs: a carried run without methods.dsah.targets trained with the
    binary targets, so it shares a row with binary runs; a graded run gets its own."""
    binary, graded = dict(DSAH, **{"methods.dsah.targets": "binary"}), dict(DSAH, **{"methods.dsah.targets": "graded"})
    runs = table([run(seed=0, mAP=0.70), run(seed=1, mAP=0.72, settings=binary), run(seed=0, mAP=0.8, settings=graded)])
    assert list(comparison(runs, "mAP", with_paper=False)["12 bits"]) == ["0.710 ± 0.014 (n=2)", "0.800"]
    # The CIFAR-10 subset came later too: a run without it used the whole set, which a new run states as 0
    # (read back from DVC as 0.0); a subset gets its own row, and another dataset implies nothing of CIFAR-10's.
    whole, subset = dict(DSAH, **{"prepare.cifar10.subset": 0.0}), dict(DSAH, **{"prepare.cifar10.subset": 6000.0})
    runs = table([run(seed=0, mAP=0.70), run(seed=1, mAP=0.72, settings=whole), run(seed=0, mAP=0.5, settings=subset),
                  run(seed=0, mAP=0.4, dataset="coco", protocol="coco")])
    mAP = comparison(runs[runs["dataset"] == "cifar10"], "mAP", with_paper=False)
    assert list(mAP.index) == ["dsah (ours; prepare.cifar10.subset=0)", "dsah (ours; prepare.cifar10.subset=6000)"]
    assert list(mAP["12 bits"]) == ["0.710 ± 0.014 (n=2)", "0.500"]
    assert list(comparison(runs[runs["dataset"] == "coco"], "mAP", with_paper=False).index) == ["dsah (ours)"]


def test_settings_are_what_the_methods_stages_read_less_seed_paths_and_devices():
    row = {"params.yaml:bits": 12, "params.yaml:dataset": "cifar10", "params.yaml:method": "dsah", "seed": 3,
           "split_seed": 0, "prepare.validation_size": 1000, "prepare.cifar10.archive": "/data/c.tar.gz",
           "prepare.coco.labels": "x", "train_imgnet.lr": 0.002, "train_imgnet.device": "auto",
           "train_imgnet.processes": 1, "train_lae.steps": 300, "methods.dsah.gamma": 200, "methods.adsh.gamma": 9,
           "features.size": 96, "encode.database": "learned", "mAP": 0.7, "reports/metrics.json:bits": 12,
           "data/prepared": "md5..."}
    params = param_values(row)
    assert params["seed"] == 3 and params["bits"] == 12 and "mAP" not in params and "data/prepared" not in params
    assert run_settings(params, "dsah", "cifar10") == {
        "encode.database": "learned", "methods.dsah.gamma": 200, "prepare.validation_size": 1000, "split_seed": 0,
        "train_imgnet.lr": 0.002, "train_lae.steps": 300}
    assert run_settings(params, "itq", "cifar10") == {
        "encode.database": "learned", "features.size": 96, "prepare.validation_size": 1000, "split_seed": 0}


@pytest.fixture
def mixed():
    """CIFAR-10 runs (three seeds of one setting, another learning rate, ITQ) and a COCO-layout stand-in."""
    faster = dict(DSAH, **{"train_imgnet.lr": 0.004})
    return table([run(seed=s, mAP=0.70 + s / 100) for s in range(3)] + [run(settings=faster, mAP=0.6)]
                 + [run(method="itq", bits=b, mAP=0.3 + b / 1000) for b in (12, 24)]
                 + [run(dataset="cifar10-mosaic", protocol="cifar10-mosaic", mAP=0.5, bits=b, stand_in=True)
                    for b in (12, 48)])


def test_written_tables_never_mix_datasets_and_show_headline_metrics(mixed, tmp_path):
    text = write_comparison(mixed, tmp_path / "c.md", tmp_path / "c.csv", tmp_path / "c.svg")
    assert (tmp_path / "c.md").read_text() == text
    cifar, mosaic = text.split("## cifar10 (protocol cifar10)\n")[1].split(
        "## cifar10-mosaic (protocol cifar10-mosaic) — STAND-IN, not a published benchmark\n")
    assert "### mAP\n" in cifar and "### mAP@5000" not in cifar and "### P@5000" in cifar  # CIFAR-10: mAP
    assert has_row(cifar, "dsah (ours; train_imgnet.lr=0.002)", "0.710 ± 0.010 (n=3)")
    assert has_row(cifar, "DSAH (paper)", "0.911") and "(paper)" not in mosaic.split("## Not reproduced")[0]
    assert "### mAP\n" in mosaic and "### mAP@5000" in mosaic  # a COCO-layout protocol: both
    assert has_row(mosaic, "dsah (ours)", "0.500", "0.500")  # alone there: no settings to tell apart
    assert has_row(cifar, "itq (ours)", "efficientnet_lite0 (ImageNet-pretrained, 96 px, 1280-d)", "58000")
    seconds = cifar.split("### Training seconds")[1].split("###")[0]
    assert has_row(seconds, "itq (ours)", "120", "240")
    assert "- FATH: " in text and "FastHash" in text
    assert pd.read_csv(tmp_path / "c.csv").shape[0] == len(mixed)
    for name in ("c.svg", "c-p5000.svg", "c-cifar10-mosaic.svg", "c-cifar10-mosaic-map5000.svg"):
        svg = (tmp_path / name).read_text()
        assert svg.startswith("<svg") and "dsah" in svg


def test_setup_table_names_features_and_sizes_per_row(mixed):
    cifar = mixed[mixed["dataset"] == "cifar10"]
    setup = setup_table(cifar)
    assert setup.loc["dsah (ours; train_imgnet.lr=0.004)", "training images"] == "40000"
    assert setup.loc["itq (ours)", "learned from"].startswith("efficientnet_lite0")


def heatmaps_by_revision(bits_by_rev: dict[str, int]):
    """A run's row -> the heatmap PNG of random codes of its length, as an experiment's evaluate stage writes it
    (found by the row's revision)."""
    rng = np.random.default_rng(0)
    stored = {rev: png_bytes(correlation_heatmap(bit_correlation(np.sign(rng.standard_normal((200, bits))))[0]))
              for rev, bits in bits_by_rev.items()}
    return lambda run: stored[run["rev"]]


def test_fig3_puts_adsh_and_dsah_heatmaps_side_by_side_with_their_mac(tmp_path):
    runs = table([run("adsh", 32, seed=1, mAP=0.6, rev="a1", mAC=0.21, mAC_query=0.19),
                  run("adsh", 32, seed=0, mAP=0.6, rev="a0", mAC=0.20, mAC_query=0.18),
                  run("dsah", 32, seed=0, mAP=0.7, rev="d0", mAC=0.11, mAC_query=0.09),
                  run("dsah", 48, seed=0, mAP=0.7, rev="d48", mAC=0.10, mAC_query=0.08),
                  run("itq", 32, mAP=0.3, rev="i0", mAC=0.3, mAC_query=0.3)])
    reader = heatmaps_by_revision({"a0": 32, "a1": 32, "d0": 32, "d48": 48, "i0": 32})
    text = write_comparison(runs, tmp_path / "c.md", tmp_path / "c.csv", tmp_path / "c.svg", reader)
    figure = Image.open(tmp_path / "c-bit-correlation.png")
    panel = Image.open(io.BytesIO(reader({"rev": "a0"})))
    assert figure.width == 2 * panel.width + 16  # ADSH's seed 0 and DSAH: ITQ and the other seed left out
    assert figure.height > panel.height
    assert "at 32 bits" in text and "![bit correlation](c-bit-correlation.png)" in text
    database, query = text.split("Database codes:")[1].split("Query codes:")
    assert has_row(database, "adsh (ours)", "0.205 ± 0.007 (n=2)", "–")
    assert has_row(database, "dsah (ours)", "0.110", "0.100")
    assert has_row(query.split("###")[0], "dsah (ours)", "0.090", "0.080")


def test_a_kept_heatmap_draws_fig3_where_its_experiment_is_gone(tmp_path):
    """A study's table carried to another machine: its runs have no revision there, their kept heatmaps do."""
    runs = table([run("adsh", 32, mAP=0.6, rev="a0"), run("dsah", 32, mAP=0.7, rev="d0")])
    runs["runs_as"] = ["tab-cifar10-32-adsh-s0", "tab-cifar10-32-dsah-s0"]
    reader = heatmaps_by_revision({"a0": 32, "d0": 32})
    first = write_comparison(runs, tmp_path / "c.md", tmp_path / "c.csv", tmp_path / "c.svg",
                             kept_heatmaps(reader, tmp_path / "heatmaps"))
    assert sorted(p.name for p in (tmp_path / "heatmaps").iterdir()) == ["tab-cifar10-32-adsh-s0.png",
                                                                          "tab-cifar10-32-dsah-s0.png"]
    drawn = (tmp_path / "c-bit-correlation.png").read_bytes()

    def gone(run):
        raise KeyError(run["rev"])

    again = write_comparison(runs.assign(rev=None), tmp_path / "c.md", tmp_path / "c.csv", tmp_path / "c.svg",
                             kept_heatmaps(gone, tmp_path / "heatmaps"))
    assert again == first and (tmp_path / "c-bit-correlation.png").read_bytes() == drawn
    with pytest.raises(KeyError):  # nothing kept, nothing to read: no figure is made up
        write_comparison(runs, tmp_path / "c.md", tmp_path / "c.csv", tmp_path / "c.svg",
                         kept_heatmaps(gone, tmp_path / "elsewhere"))
    # A later sitting that carried this table's runs.csv finds their heatmaps beside it, and keeps them too.
    carried = write_comparison(runs.assign(rev=None), tmp_path / "d.md", tmp_path / "d.csv", tmp_path / "d.svg",
                               kept_heatmaps(gone, tmp_path / "later", [tmp_path / "none", tmp_path / "heatmaps"]))
    assert (tmp_path / "d-bit-correlation.png").read_bytes() == drawn and "at 32 bits" in carried
    assert sorted(p.name for p in (tmp_path / "later").iterdir()) == ["tab-cifar10-32-adsh-s0.png",
                                                                       "tab-cifar10-32-dsah-s0.png"]


def test_fig3_falls_back_to_the_longest_code_where_32_bits_did_not_run():
    assert fig3_bits(table([run("adsh", 12), run("dsah", 48), run("itq", 64)])) == 48
    assert fig3_bits(table([run("dsah", 12), run("dsah", 32), run("dsah", 48)])) == 32
    assert fig3_bits(table([run("itq", 32)])) is None


def test_without_a_heatmap_reader_no_figure_is_written(mixed, tmp_path):
    text = write_comparison(mixed, tmp_path / "c.md", tmp_path / "c.csv", tmp_path / "c.svg")
    assert not list(tmp_path.glob("*.png")) and "bit-correlation.png" not in text


def test_a_runs_strings_and_diagnostics_come_from_its_record_at_its_commit(tmp_path):
    """exp_show's rows hold the headline metrics and the params; the protocol, what the run learned from and
    the other diagnostics come from evaluate's record (reports/evaluation.json) at the experiment's commit.
    An experiment from before the record (its metrics.json held everything) is read from its row."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "reports").mkdir()
    record = {"mAP": 0.7, "bits": 12, "method": "dsah", "dataset": "coco", "protocol": "coco-subset-200",
              "features": "images (cifar_resnet width 16, from scratch)", "train_size": 40000, "mAC_query": 0.1}
    (tmp_path / RECORD_FILE).write_text(json.dumps(record))
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "experiment")
    rev = git("rev-parse", "--short=7", "HEAD").strip()
    names = ("method", "bits", "dataset", "protocol", "mAP", "val_mAP", "features", "train_size", "mAC_query")
    row = {"rev": rev, "mAP": 0.7, "val_mAP": 0.69, "dataset": "coco", "bits": 12.0, "method": "dsah", "seed": 0}
    assert run_values(tmp_path, row, names) == {**{k: record[k] for k in names if k in record}, "val_mAP": 0.69}
    older = {"rev": "0000000", "reports/metrics.json:method": "itq", "params.yaml:method": "itq", "mAP": 0.3,
             "reports/metrics.json:bits": 24, "reports/metrics.json:dataset": "cifar10", "protocol": "cifar10"}
    assert run_values(tmp_path, older, ("method", "bits", "dataset", "protocol", "mAP", "features")) == {
        "method": "itq", "bits": 24, "dataset": "cifar10", "protocol": "cifar10", "mAP": 0.3, "features": None}
    assert param_values(row) == {"dataset": "coco", "bits": 12.0, "method": "dsah", "seed": 0}
