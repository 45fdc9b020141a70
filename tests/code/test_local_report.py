"""The execution report shows the model's metrics next to the baseline's and the champion's."""

from __future__ import annotations

import re

from pipelines.local.report import metrics_table


def test_metrics_table_has_model_baseline_and_champion_columns() -> None:
    evaluation = {
        "regression_metrics": {"angle_mae": {"value": 0.03, "standard_deviation": 0.02}},
        "baseline": {
            "prediction": {"angle": 0.0, "throttle": 0.5},
            "regression_metrics": {"angle_mae": {"value": 0.2}},
        },
        "champion": {
            "model_package_arn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/g/1",
            "regression_metrics": {"angle_mae": {"value": 0.05}},
        },
        "test_frames": 10,
    }
    html = metrics_table(evaluation)
    row = re.search(r"<tr><td>angle_mae</td>(.*?)</tr>", html).group(1)
    assert re.findall(r"<td>([^<]*)</td>", row) == ["0.0300", "0.2000", "0.0500"]
    assert "model-package/g/1" in html


def test_no_champion_leaves_its_column_empty() -> None:
    html = metrics_table(
        {"regression_metrics": {"angle_mae": {"value": 0.03}}, "baseline": None, "champion": None}
    )
    row = re.search(r"<tr><td>angle_mae</td>(.*?)</tr>", html).group(1)
    assert re.findall(r"<td>([^<]*)</td>", row) == ["0.0300", "", ""]
    assert "champion: none" in html
