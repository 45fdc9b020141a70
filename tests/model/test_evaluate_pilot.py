"""evaluate.py on fixed models whose predictions are known: exact metrics, baseline, champion (moto)."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

from edge.agent import edge_metadata  # noqa: E402
from edge.frames import FrameSpec  # noqa: E402
from processing import evaluate  # noqa: E402
from processing.shards import write_split  # noqa: E402
from training.export import build_model_json, write_model_dir  # noqa: E402
from training.model import build_model  # noqa: E402

SIDE = 80
SPEC = FrameSpec(camera_height=SIDE, camera_width=SIDE, height=SIDE, width=SIDE)
# Binary fractions: every figure below is exact in float32 and float64.
ANGLE = np.array([-0.5, 0.0, 0.25, 0.75], np.float32)
THROTTLE = np.array([0.5, 0.5, 0.25, 0.75], np.float32)
GROUP = "robocar-pilots"
REGION = "us-east-1"


def constant_model(model_type: str, angle_bias: np.ndarray, throttle_bias: np.ndarray) -> keras.Model:
    """All weights zero: every hidden activation is relu(0) = 0, so each head outputs exactly its bias."""
    model = build_model(model_type, SPEC.input_shape)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    heads = model.layers[-2:]
    for layer, bias in zip(heads, (angle_bias, throttle_bias), strict=True):
        kernel, _ = layer.get_weights()
        layer.set_weights([kernel, np.asarray(bias, np.float32)])
    return model


def model_archive(model: keras.Model, model_type: str, root: Path) -> Path:
    model_json = build_model_json(
        model_type=model_type,
        frame_spec=SPEC.to_dict(),
        throttle_range=0.5,
        dataset_fingerprint="fixed",
        history={"loss": [0.0], "val_loss": [0.0]},
        epochs_run=1,
        seed=0,
    )
    model_dir = write_model_dir(model, root / "dir", model_json)
    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=path.relative_to(model_dir).as_posix())
    return archive


@pytest.fixture(scope="module")
def test_split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    n = len(ANGLE)
    write_split(
        root,
        "test",
        {
            "images": np.random.default_rng(0).integers(0, 256, (n, SIDE, SIDE, 3), dtype=np.uint8),
            "angle": ANGLE,
            "throttle": THROTTLE,
            "session": np.array(["s"] * n),
            "tub": np.array(["t"] * n),
            "index": np.arange(n),
            "timestamp_ms": np.arange(n) * 50,
        },
        SPEC,
    )
    return root / "test"


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    angle_bins, throttle_bins = np.zeros(15), np.zeros(20)
    angle_bins[7], throttle_bins[19] = 10.0, 10.0  # argmax: angle bin 7 (0.0), throttle bin 19
    made = {
        "new": constant_model("linear", [0.25], [0.5]),
        "champion": constant_model("linear", [-0.5], [0.5]),
        "categorical": constant_model("categorical", angle_bins, throttle_bins),
    }
    out = {}
    for name, model in made.items():
        (root / name).mkdir()
        out[name] = model_archive(model, model.name, root / name)
    return out


def test_metrics_of_a_known_model_are_exact(archives, test_split, tmp_path):
    result = evaluate.evaluate(archives["new"].parent, test_split, tmp_path / "eval")
    # prediction 0.25 / 0.5 everywhere: angle errors 0.75 0.25 0 -0.5, throttle errors 0 0 0.25 -0.25
    metrics = result["regression_metrics"]
    assert metrics["angle_mae"] == {"value": 0.375, "standard_deviation": math.sqrt(0.078125)}
    assert metrics["throttle_mae"] == {"value": 0.125, "standard_deviation": 0.125}
    assert metrics["angle_rmse"]["value"] == pytest.approx(math.sqrt(0.21875), rel=1e-12)
    assert metrics["angle_rmse"]["standard_deviation"] == pytest.approx(math.sqrt(0.203125), rel=1e-12)
    assert metrics["angle_r2"]["value"] == pytest.approx(1 - 0.875 / 0.8125, rel=1e-12)
    assert "classification_metrics" not in result
    # baseline: the test split's median, 0.125 / 0.5
    baseline = result["baseline"]
    assert baseline["prediction"] == {"angle": 0.125, "throttle": 0.5}
    assert baseline["regression_metrics"]["angle_mae"] == {"value": 0.375, "standard_deviation": 0.25}
    assert result["champion"] is None
    assert result["test_frames"] == 4
    on_disk = json.loads((tmp_path / "eval/evaluation.json").read_text())
    assert on_disk["regression_metrics"]["angle_mae"]["value"] == 0.375  # what the Condition's JsonGet reads
    assert on_disk["plots"] == ["angle_over_time.png", "angle_scatter.png"]
    for plot in on_disk["plots"]:
        assert (tmp_path / "eval" / plot).read_bytes().startswith(b"\x89PNG")


def test_categorical_bin_accuracy(archives, test_split, tmp_path):
    result = evaluate.evaluate(archives["categorical"], test_split, tmp_path, plots=False)
    # recorded angle bins 4 7 9 12, predicted 7; recorded throttle bins 19 19 10 19, predicted 19
    assert result["classification_metrics"] == {
        "angle_bin_accuracy": {"value": 0.25},
        "throttle_bin_accuracy": {"value": 0.75},
    }
    assert result["regression_metrics"]["angle_mae"]["value"] == pytest.approx(0.375, abs=1e-6)  # angle 0


@pytest.fixture
def registry(monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="models")
        sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
        yield sagemaker, s3


def register(sagemaker, url: str, status: str, metadata: dict[str, str] | None = None) -> str:
    return sagemaker.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus=status,
        **({"CustomerMetadataProperties": metadata} if metadata else {}),
        InferenceSpecification={
            "Containers": [
                {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/tf:2", "ModelDataUrl": url}
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    )["ModelPackageArn"]


def test_champion_is_the_newest_approved_package_evaluated_on_the_same_frames(
    registry, archives, test_split, tmp_path
):
    sagemaker, s3 = registry
    s3.put_object(Bucket="models", Key="champion/model.tar.gz", Body=archives["champion"].read_bytes())
    register(sagemaker, "s3://models/older/model.tar.gz", "Approved")  # older: not the champion
    champion_arn = register(sagemaker, "s3://models/champion/model.tar.gz", "Approved")
    register(sagemaker, "s3://models/pending/model.tar.gz", "PendingManualApproval")  # newer, not approved

    result = evaluate.evaluate(
        archives["new"], test_split, tmp_path, group=GROUP, sagemaker=sagemaker, s3=s3, plots=False
    )
    champion = result["champion"]
    assert champion["model_package_arn"] == champion_arn
    assert champion["model_data_url"] == "s3://models/champion/model.tar.gz"
    # champion predicts -0.5: angle errors 0 0.5 0.75 1.25
    assert champion["regression_metrics"]["angle_mae"]["value"] == 0.625
    assert result["regression_metrics"]["angle_mae"]["value"] == 0.375  # the new model, unchanged


def test_champion_is_what_the_car_with_the_first_edge_target_installs(
    registry, archives, test_split, tmp_path
):
    sagemaker, s3 = registry
    s3.put_object(Bucket="models", Key="champion/model.tar.gz", Body=archives["champion"].read_bytes())
    nano = edge_metadata("jetson_nano", uri="s3://models/nano.tar.gz", sha256="ab" * 32, runtime="dlr")
    champion_arn = register(sagemaker, "s3://models/champion/model.tar.gz", "Approved", nano)
    pi = edge_metadata("rasp4b", uri="s3://models/pi.tar.gz", sha256="ab" * 32, runtime="dlr")
    register(sagemaker, "s3://models/pi-only/model.tar.gz", "Approved", pi)  # newer: no jetson_nano artifact

    result = evaluate.evaluate(
        archives["new"], test_split, tmp_path, group=GROUP, sagemaker=sagemaker, s3=s3, plots=False,
        edge_targets="jetson_nano,rasp4b",
    )  # fmt: skip
    assert result["champion"]["model_package_arn"] == champion_arn
    assert result["champion"]["regression_metrics"]["angle_mae"]["value"] == 0.625


def test_evaluation_says_whether_this_exact_model_is_registered_already(
    registry, archives, test_split, tmp_path
):
    sagemaker, s3 = registry
    model_uri = "s3://models/q9x1b2c3d4e5/train/output/model.tar.gz"
    arguments = dict(group=GROUP, sagemaker=sagemaker, s3=s3, plots=False, model_s3_uri=model_uri)
    assert (
        evaluate.evaluate(archives["new"], test_split, tmp_path, **arguments)["already_registered"] is False
    )
    register(sagemaker, model_uri, "PendingManualApproval")  # what the Register step of a first run does
    written = evaluate.evaluate(archives["new"], test_split, tmp_path, **arguments)
    assert written["already_registered"] is True
    assert json.loads((tmp_path / "evaluation.json").read_text())["already_registered"] is True


def test_no_approved_package_means_no_champion(registry, archives, test_split, tmp_path):
    sagemaker, s3 = registry
    register(sagemaker, "s3://models/pending/model.tar.gz", "PendingManualApproval")
    result = evaluate.evaluate(archives["new"], test_split, tmp_path, group=GROUP, sagemaker=sagemaker, s3=s3)
    assert result["champion"] is None


def test_missing_group_means_no_champion(registry, archives, test_split, tmp_path):
    sagemaker, s3 = registry
    assert evaluate.find_champion(sagemaker, "no-such-group") is None


def test_cli_reports_bad_input_without_traceback(test_split, tmp_path, capsys):
    code = evaluate.main(
        ["--model", str(tmp_path / "missing"), "--test", str(test_split), "--output", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no model.tar.gz" in err and "Traceback" not in err


def test_cli_writes_evaluation_json(archives, test_split, tmp_path, capsys):
    out = tmp_path / "evaluation"
    code = evaluate.main(
        ["--model", str(archives["new"].parent), "--test", str(test_split), "--output", str(out)]
    )
    assert code == 0
    assert "angle_mae=0.375 baseline_angle_mae=0.375" in capsys.readouterr().out
    written = json.loads((out / "evaluation.json").read_text())
    assert written["champion"] is None and written["already_registered"] is False  # no group, no lookup


def test_tar_with_an_escaping_member_is_refused(test_split, tmp_path):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(evaluate.EvaluationError, match="cannot extract"):
        evaluate.evaluate(archive, test_split, tmp_path / "out")
