"""The demo's summary says, for angle and throttle alike, how the pilot compares with a constant."""

from __future__ import annotations

from pipelines.demo import learned_lines


def test_both_outputs_are_compared_with_the_constant_baseline():
    model = {"angle_mae": {"value": 0.03, "standard_deviation": 0.02}, "throttle_mae": {"value": 0.0125}}
    baseline = {"angle_mae": {"value": 0.2}, "throttle_mae": 0.05}
    assert [line.strip() for line in learned_lines(model, baseline)] == [
        "angle MAE is 15.0% of the constant baseline's",
        "throttle MAE is 25.0% of the constant baseline's",
    ]


def test_a_missing_metric_or_a_zero_baseline_prints_no_ratio():
    assert learned_lines({"angle_mae": 0.1}, {"angle_mae": 0.0, "throttle_mae": 0.1}) == []
