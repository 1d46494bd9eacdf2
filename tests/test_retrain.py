"""Promotion decides on the validation slice by the protocol's own metric (NUS-WIDE: mAP@5000)."""

from dsah.retrain import decide


def result(name: str, val_mAP: float, metric: str = "mAP", score: float | None = None) -> dict:
    return {"experiment": name, "val_mAP": val_mAP, "val_metric": metric,
            "val_score": val_mAP if score is None else score}


def test_the_best_candidate_by_the_protocols_metric_is_promoted_first():
    # NUS-WIDE: b has the better mAP@5000 and the worse whole-database mAP; the protocol's metric wins.
    decision = decide([result("a", 0.60, "mAP@5000", 0.70), result("b", 0.55, "mAP@5000", 0.75)], None, 0.01)
    assert decision.promote and decision.candidate == "b" and decision.candidate_score == 0.75
    assert decision.metric == "mAP@5000" and decision.reason == "no model serves yet"


def test_a_candidate_worse_than_the_serving_model_beyond_the_tolerance_is_kept_out():
    serving = result("old", 0.50, "mAP@5000", 0.80)
    kept_out = decide([result("new", 0.70, "mAP@5000", 0.78)], serving, tolerance=0.01)
    assert not kept_out.promote and kept_out.current_score == 0.80
    assert kept_out.reason.startswith("validation mAP@5000 0.7800 < 0.8000 - 0.01")
    assert decide([result("new", 0.70, "mAP@5000", 0.795)], serving, tolerance=0.01).promote


def test_runs_recorded_before_the_protocol_metric_existed_are_compared_by_their_mAP():
    old = {"experiment": "old", "val_mAP": 0.70}
    decision = decide([result("new", 0.72)], old, tolerance=0.0)
    assert decision.promote and decision.current_score == 0.70 and decision.metric == "mAP"
