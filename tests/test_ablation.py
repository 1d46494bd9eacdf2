"""The ablation's variants, plan and paired table (no DVC needed; the flow's run is in test_flows)."""

import io
import math

import pandas as pd
import pytest
from fixtures import has_row, table_rows

from dsah.experiments.studies import (SWEEP, TERMS, carried, combined, compared_together, markdown, plan, plot,
                                     results, run_table, summary, to_run, variants)
from dsah.errors import ConfigError

DSAH = {"init": "label_codes", "lam": 1.0, "eta": 0.065, "mu": 0.04, "gamma": 200.0, "targets": "binary"}
PARAMS = {"methods": {"dsah": DSAH}, "train_lae": {"alpha": 1.0}}


def test_each_variant_switches_one_term_against_its_reference_and_all_off_is_adsh():
    chosen = {v.name: v for v in variants("ablation", PARAMS)}
    assert list(chosen) == ["adsh", "adsh_init", "adsh_init_lam", "adsh_init_lam_eta", "dsah",
                            "dsah_no_init", "dsah_no_lam", "dsah_no_eta", "dsah_no_mu"]
    assert chosen["adsh"].overrides == {"methods.dsah.init": "zeros", "methods.dsah.lam": 0.0,
                                        "methods.dsah.eta": 0.0, "methods.dsah.mu": 0.0}
    # Graded targets are off in these params: no rungs for them, and no -S value (earlier tables still carry).
    assert chosen["dsah"].overrides == {f"methods.dsah.{term}": DSAH[term] for term in TERMS if term != "targets"}
    for v in chosen.values():
        if v.reference is not None:
            reference = chosen[v.reference].overrides
            changed = [key for key in v.overrides if v.overrides[key] != reference[key]]
            assert len(changed) == 1, (v.name, changed)
    assert chosen["dsah_no_eta"].reference == "dsah" and chosen["adsh_init_lam"].reference == "adsh_init"


def test_graded_targets_turned_on_are_the_ladders_fifth_term():
    params = {**PARAMS, "methods": {"dsah": {**DSAH, "targets": "graded"}}}
    chosen = {v.name: v for v in variants("ablation", params)}
    assert list(chosen) == ["adsh", "adsh_init", "adsh_init_lam", "adsh_init_lam_eta", "adsh_init_lam_eta_mu", "dsah",
                            "dsah_no_init", "dsah_no_lam", "dsah_no_eta", "dsah_no_mu", "dsah_no_targets"]
    assert chosen["adsh"].overrides["methods.dsah.targets"] == "binary"
    assert chosen["dsah"].overrides["methods.dsah.targets"] == "graded"
    assert chosen["dsah"].reference == "adsh_init_lam_eta_mu"
    assert chosen["dsah_no_targets"].overrides == chosen["adsh_init_lam_eta_mu"].overrides  # one run for both
    planned = plan("ablation", ["cifar10-scenes"], [12], [0], "quick", params).set_index("variant")
    assert planned.loc["dsah_no_targets", "runs_as"] == "abl-cifar10-scenes-12-adsh_init_lam_eta_mu-s0-quick"
    with pytest.raises(ConfigError, match="nothing to ablate"):
        variants("ablation", {**PARAMS, "methods": {"dsah": {**DSAH, "init": "zeros", "lam": 0, "eta": 0, "mu": 0}}})


def test_the_plan_names_every_experiment_by_what_it_is_and_checks_its_settings():
    planned = plan("ablation", ["cifar10", "cifar10-mosaic"], [12, 48], [0, 1, 2], "quick", PARAMS)
    assert len(planned) == 2 * 2 * 3 * 9 and planned["experiment"].is_unique
    row = planned[planned["experiment"] == "abl-cifar10-mosaic-48-dsah_no_mu-s2-quick"].iloc[0]
    assert {"dataset=cifar10-mosaic", "method=dsah", "bits=48", "seed=2", "methods.dsah.mu=0.0",
            "methods.dsah.eta=0.065", "methods.dsah.init=label_codes", "train_imgnet.outer_iters=10"} <= set(row["sets"])
    assert list(plan("ablation", ["cifar10"], [12], [0], "tiny", PARAMS, only=["adsh", "dsah"])["variant"]) == ["adsh", "dsah"]
    with pytest.raises(ValueError, match="unknown variants"):
        plan("ablation", ["cifar10"], [12], [0], "tiny", PARAMS, only=["dsah_no_gamma"])
    with pytest.raises(ConfigError, match="bits"):
        plan("ablation", ["cifar10"], [200], [0], "tiny", PARAMS)
    with pytest.raises(ValueError, match="unknown study"):
        plan("grid", ["cifar10"], [12], [0], "tiny", PARAMS)


def test_the_sweep_moves_one_setting_at_a_time_and_runs_the_defaults_once():
    planned = plan("sweep", ["cifar10"], [12], [0], "quick", PARAMS)
    chosen = {v.name: v for v in variants("sweep", PARAMS)}
    assert chosen["defaults"].overrides == {} and chosen["defaults"].reference is None
    assert "eta_0.065" not in chosen and "alpha_1.0" not in chosen  # the defaults' own values
    assert chosen["alpha_0.3"].overrides == {"train_lae.alpha": 0.3} and chosen["init_random"].reference == "defaults"
    assert len(chosen) == 1 + sum(len(values) - 1 for values in SWEEP.values())
    row = planned[planned["experiment"] == "swp-cifar10-12-gamma_400.0-s0-quick"].iloc[0]
    assert "methods.dsah.gamma=400.0" in row["sets"] and not any("eta" in s for s in row["sets"])


def test_variants_with_the_same_settings_share_one_run_listed_under_both_names():
    """DSAH without mu is the cumulative ladder's third rung: one training run stands for both rows."""
    planned = plan("ablation", ["cifar10"], [12], [0, 1], "tiny", PARAMS)
    shared = planned[planned["runs_as"] != planned["experiment"]]
    assert list(shared["variant"]) == ["dsah_no_mu", "dsah_no_mu"]
    assert list(shared["runs_as"]) == ["abl-cifar10-12-adsh_init_lam_eta-s0-tiny",
                                       "abl-cifar10-12-adsh_init_lam_eta-s1-tiny"]
    todo = to_run(planned, set())
    assert len(todo) == 16 and "abl-cifar10-12-dsah_no_mu-s0-tiny" not in todo
    assert todo["abl-cifar10-12-adsh-s1-tiny"] == list(planned["sets"].iloc[9])

    rung = "abl-cifar10-12-adsh_init_lam_eta-s0-tiny"
    assert rung not in to_run(planned, {rung})
    # Carried under its own name from a table of the time before sharing: that row needs no run either.
    assert "abl-cifar10-12-adsh_init_lam_eta-s1-tiny" in to_run(planned, {"abl-cifar10-12-dsah_no_mu-s1-tiny"})
    assert len(to_run(planned, {"abl-cifar10-12-dsah_no_mu-s1-tiny", "abl-cifar10-12-adsh_init_lam_eta-s1-tiny"})) == 15

    runs = pd.DataFrame([{"experiment": name, "mAP": 0.7, "mAP@5000": 0.6, "val_mAP": 0.7, "train_seconds": 100.0}
                         for name in (rung, "abl-cifar10-12-dsah-s0-tiny")])
    done = results(planned, runs)
    assert list(done["variant"]) == ["adsh_init_lam_eta", "dsah", "dsah_no_mu"]
    assert list(done["runs_as"]) == [rung, "abl-cifar10-12-dsah-s0-tiny", rung]
    table = summary(done, variants("ablation", PARAMS)).set_index(["variant", "metric"])
    assert table.loc[("dsah_no_mu", "mAP"), "diff_mean"] == pytest.approx(0.0)  # the same run, listed twice
    # A run made under the row's own name (before sharing) is its own numbers.
    rung_row = {**runs.iloc[0], "experiment": "abl-cifar10-12-dsah_no_mu-s0-tiny", "mAP": 0.69}
    own = pd.concat([runs, pd.DataFrame([rung_row])])
    assert results(planned, own).set_index("variant").loc["dsah_no_mu", "mAP"] == pytest.approx(0.69)


def test_the_table_study_runs_every_method_in_the_papers_order_at_the_profiles_lengths():
    """Tab.1 in the pretrained regime: DAPH, HashNet and DNNH at 12 and 48 bits only, the others at every length."""
    planned = plan("table", ["cifar10"], [12, 24, 32], [0], "pretrained", PARAMS)
    assert list(planned.loc[planned["bits"] == 12, "variant"]) == ["ksh", "sdh", "itq", "dnnh", "hashnet", "daph",
                                                                   "adsh", "dsah"]
    assert list(planned.loc[planned["bits"] == 24, "variant"]) == ["ksh", "sdh", "itq", "adsh", "dsah"]
    assert planned["experiment"].iloc[0] == "tab-cifar10-12-ksh-s0-pretrained"
    sets = planned.set_index("experiment")["sets"]
    assert "train_imgnet.backbone=efficientnet_lite0" in sets["tab-cifar10-12-dsah-s0-pretrained"]
    assert "method=hashnet" in sets["tab-cifar10-12-hashnet-s0-pretrained"]
    # Another profile trains every method at every length, under names of its own (runs are found by name);
    # DSAH is paired with ADSH as published.
    quick = plan("table", ["cifar10"], [12, 24], [0], "quick", PARAMS)
    assert len(quick) == 16 and not set(quick["experiment"]) & set(planned["experiment"])
    assert set(plan("table", ["cifar10"], [12], [0], "default", PARAMS)["experiment"]) >= {"tab-cifar10-12-dsah-s0"}
    dsah = next(v for v in variants("table", PARAMS) if v.name == "dsah")
    assert (dsah.method, dsah.reference) == ("dsah", "adsh")


def test_a_run_of_one_study_counts_for_another_with_the_same_settings():
    """The Tab.1 study's DSAH and ADSH at seed 0 are the paper study's seed 0: carried by their -S values,
    under the paper study's names, with the run that trained them named."""
    table_plan = plan("table", ["cifar10"], [12], [0], "pretrained", PARAMS)
    runs = finished_runs(table_plan, lambda v, s: {"adsh": 0.86, "dsah": 0.87}.get(v, 0.5))
    written = pd.read_csv(io.StringIO(results(table_plan, runs, "a machine").to_csv(index=False)))

    paper = plan("paper", ["cifar10"], [12], [0, 1], "pretrained", PARAMS)
    moved = carried(paper, written, "a machine")
    assert list(moved["experiment"]) == ["pap-cifar10-12-adsh-s0-pretrained", "pap-cifar10-12-dsah-s0-pretrained"]
    assert list(moved["runs_as"]) == ["tab-cifar10-12-adsh-s0-pretrained", "tab-cifar10-12-dsah-s0-pretrained"]
    assert list(moved["variant"]) == ["adsh", "dsah"] and list(moved["mAP"]) == pytest.approx([0.86, 0.87])
    assert list(to_run(paper, set(moved["experiment"]))) == ["pap-cifar10-12-adsh-s1-pretrained",
                                                     "pap-cifar10-12-dsah-s1-pretrained"]
    # Another profile's runs are other settings: nothing carried.
    assert carried(plan("paper", ["cifar10"], [12], [0], "quick", PARAMS), written).empty


def finished_runs(planned, mAP):
    """collect_runs' rows for the planned experiments: mAP from a function of (variant, seed)."""
    return pd.DataFrame([{"experiment": r.experiment, "mAP": mAP(r.variant, r.seed), "mAP@5000": 0.5,
                          "val_mAP": mAP(r.variant, r.seed) - 0.01, "train_seconds": 100.0 + r.seed}
                         for r in planned.itertuples()])


def test_differences_are_paired_by_seed():
    planned = plan("ablation", ["cifar10"], [12], [0, 1, 2], "tiny", PARAMS, only=["adsh", "adsh_init", "dsah"])
    seed_effect = {0: 0.60, 1: 0.70, 2: 0.65}  # seeds differ far more than the variants do
    gain = {"adsh": 0.0, "adsh_init": 0.01, "dsah": {0: 0.03, 1: 0.02, 2: 0.04}}
    runs = finished_runs(planned, lambda v, s: seed_effect[s] + (gain[v][s] if isinstance(gain[v], dict) else gain[v]))
    runs = runs[runs["experiment"] != "abl-cifar10-12-adsh_init-s2-tiny"]  # one not finished yet
    table = summary(results(planned, runs), variants("ablation", PARAMS)).set_index(["variant", "metric"])
    headline = table.loc[("dsah_vs_adsh", "mAP")]
    assert headline["pairs"] == 3 and headline["diff_mean"] == pytest.approx(0.03)
    assert headline["diff_sd"] == pytest.approx(0.01) and headline["beyond_2sd"]
    assert table.loc[("dsah", "mAP"), "sd"] > 0.04  # unpaired, the seed spread would hide the gain
    assert table.loc[("adsh_init", "mAP"), "n"] == 2 and table.loc[("adsh_init", "mAP"), "pairs"] == 2
    assert table.loc[("adsh_init", "mAP"), "diff_mean"] == pytest.approx(0.01)
    assert table.loc[("adsh_init", "mAP"), "diff_sd"] == pytest.approx(0.0, abs=1e-9)
    # DSAH's own reference is the cumulative step before it, which did not run: no difference there.
    assert math.isnan(table.loc[("dsah", "mAP"), "diff_mean"])
    assert table.loc[("adsh", "train_seconds"), "mean"] == pytest.approx(101.0)


def test_multi_label_tables_show_graded_relevance_beside_map_and_runs_from_before_it_read_as_not_measured():
    planned = plan("ablation", ["cifar10", "cifar10-scenes"], [12], [0, 1], "tiny", PARAMS, only=["adsh", "dsah"])
    runs = finished_runs(planned, lambda v, s: {"adsh": 0.6, "dsah": 0.65}[v] + s / 100)
    runs["NDCG@1000"] = [0.5 + 0.1 * ("dsah" in name) + s / 100 for name, s in zip(runs["experiment"], planned["seed"])]
    runs["ACG@1000"] = 1.0
    older = (runs["experiment"] == "abl-cifar10-scenes-12-adsh-s1-tiny")  # recorded before graded relevance
    runs.loc[older, ["NDCG@1000", "ACG@1000"]] = math.nan
    table = summary(results(planned, runs), variants("ablation", PARAMS))
    scenes = table[(table["dataset"] == "cifar10-scenes")].set_index(["variant", "metric"])
    assert scenes.loc[("dsah_vs_adsh", "NDCG@1000"), "diff_mean"] == pytest.approx(0.1)
    assert scenes.loc[("dsah_vs_adsh", "NDCG@1000"), "pairs"] == 1  # the pair with the older run is left out
    assert "NDCG@1000" not in set(table[table["dataset"] == "cifar10"]["metric"])  # one label: mAP's relevance
    cifar, scenes_text = markdown(table, "Ablation", "2 seeds.").split("## cifar10-scenes, 12 bits")
    assert "NDCG" not in cifar
    assert table_rows(scenes_text)[0][2:8] == ["mAP", "Δ mAP", "NDCG@1000", "Δ NDCG@1000", "ACG@1000", "Δ ACG@1000"]
    assert has_row(scenes_text, "ADSH (every term off)", "–", "0.605 ± 0.007 (2)", "–", "0.500", "–", "1.000", "–")


def test_the_paper_study_trains_adsh_as_published_and_dsah_interleaved_and_pairs_them_by_seed():
    planned = plan("paper", ["cifar10"], [12, 48], [0, 1, 2], "default", PARAMS)
    assert list(planned["experiment"][:4]) == ["pap-cifar10-12-adsh-s0", "pap-cifar10-12-dsah-s0",
                                               "pap-cifar10-12-adsh-s1", "pap-cifar10-12-dsah-s1"]
    methods = {row.variant: [s for s in row.sets if s.startswith("method=")] for row in planned.itertuples()}
    assert methods == {"adsh": ["method=adsh"], "dsah": ["method=dsah"]}  # ADSH's own section: its zero start
    runs = finished_runs(planned, lambda v, s: {0: 0.80, 1: 0.85, 2: 0.82}[s] + (0.03 if v == "dsah" else 0.0))
    done = results(planned, runs, "a machine")
    table = summary(done, variants("paper", PARAMS))
    assert "dsah_vs_adsh" not in set(table["variant"])  # DSAH's own row is the difference from ADSH
    # runs.csv: a run's setting and scores first (those the rows have), the study's bookkeeping after.
    assert list(run_table(done).columns) == ["dataset", "bits", "seed", "val_mAP", "mAP", "mAP@5000", "train_seconds",
                                             "machine", "experiment", "variant", "sets", "runs_as"]
    headline = table.set_index(["bits", "variant", "metric"]).loc[(48, "dsah", "mAP")]
    assert headline["pairs"] == 3 and headline["diff_mean"] == pytest.approx(0.03) and headline["beyond_2sd"]


def test_the_written_table_and_plot_name_the_rows_and_flag_clear_differences():
    planned = plan("ablation", ["cifar10", "cifar10-mosaic"], [12], [0, 1], "tiny", PARAMS,
                   only=["adsh", "dsah", "dsah_no_eta"])
    runs = finished_runs(planned, lambda v, s: {"adsh": 0.6, "dsah": 0.65, "dsah_no_eta": 0.64}[v] + s / 100)
    table = summary(results(planned, runs), variants("ablation", PARAMS))
    text = markdown(table, "Ablation", "2 seeds.")
    cifar, mosaic = text.split("## cifar10, 12 bits")[1].split("## cifar10-mosaic, 12 bits")
    assert has_row(cifar, "DSAH vs ADSH (the paper's claim)", "adsh", "0.655 ± 0.007 (2)", "+0.050 ± 0.000 **")
    assert has_row(cifar, "DSAH - eta (semantic constraint)", "dsah", "0.645 ± 0.007 (2)", "-0.010 ± 0.000 **")
    assert ["mAP@5000", "Δ mAP@5000"] == table_rows(mosaic)[0][4:6] and "mAP@5000" not in cifar.split("\n")[2]
    assert "Highest validation-slice mAP: DSAH vs ADSH" not in cifar
    assert "Highest validation-slice mAP: + mu (decoder constraint) = DSAH (0.645, n=2)." in cifar
    svg = plot(table, "cifar10")
    assert svg.startswith("<svg") and "dsah vs adsh" in svg and "dsah_no_eta vs dsah" in svg and "12 bits" in svg
    assert "Δ mAP<" in svg and "Δ val_mAP<" in plot(table, "cifar10", "val_mAP")  # the sweep plots what it chooses by


def test_an_earlier_table_carries_only_rows_with_this_plans_names_and_settings():
    """A study continued on another machine: the earlier runs.csv, read back as written, stands for the
    experiments it finished, unless a setting of the plan has changed since."""
    planned = plan("ablation", ["cifar10"], [12], [0, 1], "tiny", PARAMS, only=["adsh", "dsah"])
    runs = finished_runs(planned, lambda v, s: {"adsh": 0.6, "dsah": 0.65}[v] + s / 100)
    earlier = results(planned, runs[runs["experiment"].str.endswith("-s0-tiny")])  # seed 0 finished there
    written = pd.read_csv(io.StringIO(earlier.to_csv(index=False)))

    assert list(carried(planned, written)["experiment"]) == ["abl-cifar10-12-adsh-s0-tiny",
                                                             "abl-cifar10-12-dsah-s0-tiny"]
    retuned = plan("ablation", ["cifar10"], [12], [0, 1], "tiny", {**PARAMS, "methods": {"dsah": {**DSAH, "eta": 0.2}}},
                   only=["adsh", "dsah"])
    assert list(carried(retuned, written)["experiment"]) == ["abl-cifar10-12-adsh-s0-tiny"]  # dsah's eta changed
    assert carried(plan("ablation", ["cifar10"], [12], [0], "quick", PARAMS, only=["adsh"]), written).empty
    with pytest.raises(ValueError, match="not a study's runs.csv"):
        carried(planned, written.drop(columns="sets"))

    here = results(planned, runs[runs["experiment"] != "abl-cifar10-12-adsh-s0-tiny"].assign(mAP=0.7))
    both = combined(planned, here, carried(planned, written))
    assert list(both["experiment"]) == list(planned["experiment"])  # the plan's order, each once
    before_sharing = combined(planned, here, carried(planned, written.drop(columns="runs_as")))
    assert list(before_sharing["runs_as"]) == list(planned["experiment"])  # each row was its own run
    alone = combined(planned, here, pd.DataFrame(columns=["experiment", "sets"]))  # nothing carried
    assert alone["bits"].dtype == alone["seed"].dtype == "int64"  # runs.csv says 12, not 12.0
    assert list(both["mAP"]) == pytest.approx([0.6, 0.7, 0.7, 0.7])  # this machine's run wins over the carried
    table = summary(both, variants("ablation", PARAMS)).set_index(["variant", "metric"])
    assert table.loc[("dsah_vs_adsh", "mAP"), "pairs"] == 2


def test_runs_compared_with_each_other_are_carried_together_from_one_machine_and_pairs_never_cross_machines():
    """Another CPU trains the same seed to other numbers, so a difference is paired on one machine: an
    earlier machine's runs that are compared with each other count only where that machine finished them all."""
    planned = plan("ablation", ["cifar10"], [12], [0, 1], "tiny", PARAMS, only=["adsh", "dsah"])
    runs = finished_runs(planned, lambda v, s: {"adsh": 0.6, "dsah": 0.65}[v] + s / 100)
    there = results(planned, runs[runs["experiment"] != "abl-cifar10-12-dsah-s1-tiny"], "machine A")
    written = pd.read_csv(io.StringIO(there.to_csv(index=False)))
    assert set(written["machine"]) == {"machine A"}

    # Seed 0 finished there: carried; seed 1 did not: run again here, whole.
    assert list(carried(planned, written, "machine B")["experiment"]) == ["abl-cifar10-12-adsh-s0-tiny",
                                                                          "abl-cifar10-12-dsah-s0-tiny"]
    assert len(carried(planned, written, "machine A")) == 3  # the same machine continues its own block
    # Both machines finished seed 0: this machine's runs are the ones carried.
    twice = pd.concat([written, written[written["seed"] == 0].assign(machine="machine B", mAP=0.5)])
    chosen = carried(planned, twice, "machine B")
    assert set(chosen.loc[chosen["seed"] == 0, "machine"]) == {"machine B"} and not chosen["experiment"].duplicated().any()

    # With the study's references, only the runs compared with each other go together: in Tab.1, DSAH with
    # ADSH, each other method alone (its cell compares with nothing on its machine).
    tab = plan("table", ["cifar10"], [12], [0], "pretrained", PARAMS, only=["dsah", "adsh", "hashnet", "daph"])
    references = {v.name: v.reference for v in variants("table", PARAMS)}
    tab_runs = finished_runs(tab, lambda v, s: 0.8)
    dsah_hashnet = results(tab, tab_runs[tab_runs["experiment"].str.contains("-dsah-|-hashnet-")], "machine A")
    assert list(carried(tab, dsah_hashnet, "machine B", references)["variant"]) == ["hashnet"]  # not dsah alone
    assert carried(tab, dsah_hashnet, "machine B").empty  # the block, whole, is unfinished there
    pair = results(tab, tab_runs[tab_runs["experiment"].str.contains("-dsah-|-adsh-")], "machine A")
    assert sorted(carried(tab, pair, "machine B", references)["variant"]) == ["adsh", "dsah"]
    assert compared_together(["adsh", "dsah", "dsah_no_eta", "itq"], {"dsah": "adsh", "dsah_no_eta": "dsah"}) == {
        "adsh": "adsh", "dsah": "adsh", "dsah_no_eta": "adsh", "itq": "itq"}

    # A variant and its reference from two machines make no pair.
    mixed = pd.concat([there[there["experiment"] == "abl-cifar10-12-adsh-s1-tiny"],
                       results(planned, runs[runs["experiment"] == "abl-cifar10-12-dsah-s1-tiny"], "machine B")])
    table = summary(mixed, variants("ablation", PARAMS)).set_index(["variant", "metric"])
    assert table.loc[("dsah_vs_adsh", "mAP"), "pairs"] == 0 and pd.isna(table.loc[("dsah_vs_adsh", "mAP"), "diff_mean"])
