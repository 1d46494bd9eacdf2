"""The Tab.1 layout from a table of runs (no DVC needed): scores, seconds, setup, plots, the FATH note."""

import pandas as pd

from dsah.compare import COLUMNS, comparison, method_order, write_comparison


def runs():
    rows = []
    for method, features, size, base in (("dsah", "images (cifar_resnet width 16, from scratch)", 40000, 0.7),
                                         ("itq", "efficientnet_lite0 (ImageNet-pretrained, 96 px, 1280-d)", 58000, 0.3)):
        for bits in (12, 24):
            rows.append({"experiment": f"{method}-{bits}", "rev": "abc", "method": method, "bits": bits,
                         "dataset": "cifar10", "mAP": base + bits / 1000, "P@5000": base, "train_seconds": 10.0 * bits,
                         "features": features, "train_size": size})
    rows.append({**rows[0], "experiment": "dsah-12-again", "mAP": 0.8})  # a repeat is averaged and counted
    return pd.DataFrame(rows, columns=list(COLUMNS))


def test_methods_follow_the_papers_order():
    assert method_order(["dsah", "itq", "hashnet", "ksh", "adsh"]) == ["ksh", "itq", "hashnet", "adsh", "dsah"]


def test_comparison_averages_repeats_and_leaves_missing_lengths_empty():
    table = comparison(runs(), "mAP", with_paper=False)
    assert list(table.index) == ["itq (ours)", "dsah (ours)"]
    assert list(table.columns) == ["12 bits", "24 bits"]
    assert table.loc["dsah (ours)", "12 bits"] == f"{(0.712 + 0.8) / 2:.3f} (n=2)"
    assert table.loc["itq (ours)", "24 bits"] == "0.324"
    with_paper = comparison(runs(), "mAP")
    assert with_paper.loc["DSAH (paper)", "48 bits"] == "0.948" and with_paper.loc["dsah (ours)", "48 bits"] == "–"


def test_written_table_names_features_sizes_seconds_and_what_is_not_reproduced(tmp_path):
    text = write_comparison(runs(), tmp_path / "c.md", tmp_path / "c.csv", tmp_path / "c.svg")
    assert (tmp_path / "c.md").read_text() == text
    assert "| itq (ours) | efficientnet_lite0 (ImageNet-pretrained, 96 px, 1280-d) | 58000 |" in text
    assert "| dsah (ours) | images (cifar_resnet width 16, from scratch) | 40000 |" in text
    seconds = text.split("## Training seconds")[1].split("##")[0]
    assert "| itq (ours) | 120 | 240 |" in seconds
    assert "- FATH: " in text and "FastHash" in text
    assert pd.read_csv(tmp_path / "c.csv").shape[0] == 5
    for name in ("c.svg", "c-p5000.svg"):
        svg = (tmp_path / name).read_text()
        assert svg.startswith("<svg") and "itq" in svg and "dsah" in svg
