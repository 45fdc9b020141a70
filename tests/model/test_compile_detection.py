"""processing/compile_detection.py in the MXNet environment on the stand-in deploy symbol
(tests/model/detection_standin.py): the heads in ONNX float32 and int8, the anchors as data, each
artifact's mAP against MXNet's forward + decode, and the package the car installs."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from mxnet_fixtures import REPO, run_in_mxnet

from edge.detect import decode
from edge.photos import PhotoTransform, prepare

sys.path.insert(0, str(Path(__file__).parent))
from detection_standin import BLUE_BOX, CLASSES, RED_BOX, write_model, write_photos  # noqa: E402


@pytest.fixture(scope="module")
def compiled(mxnet_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compile-detection")
    write_photos(root / "train", 24, seed=1)
    write_photos(root / "test", 12, seed=2)
    write_model(root / "model")
    done = run_in_mxnet(
        mxnet_python,
        [str(REPO / "tests" / "model" / "detection_standin.py"), "compile",
         *("--model", str(root / "model"), "--train", str(root / "train"), "--test", str(root / "test")),
         *("--output", str(root / "out"), "--mode", "local", "--edge-targets", "jetson_nano,rasp4b")],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def package_files(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_the_package_holds_the_heads_and_the_anchors(compiled: Path) -> None:
    summary = json.loads((compiled / "out" / "compiled.json").read_text())
    assert summary["task"] == "detection" and sorted(summary["targets"]) == ["jetson_nano", "rasp4b"]
    manifest = json.loads((compiled / "out" / "jetson_nano" / "manifest.json").read_text())
    assert manifest["task"] == "detection" and manifest["classes"] == CLASSES
    assert manifest["anchors_file"] == "anchors.npy"
    assert manifest["decode"] == {
        "variances": [0.1, 0.1, 0.2, 0.2], "nms_threshold": 0.45, "nms_topk": 400, "threshold": 0.01
    }  # fmt: skip
    assert PhotoTransform.from_dict(manifest["input_transform"]).crop == "stretch"
    by_precision = {a["precision"]: a for a in manifest["artifacts"]}
    assert sorted(by_precision) == ["float32", "int8"] and manifest["default"] == "detector-int8.onnx"
    for artifact in by_precision.values():
        assert [o["name"] for o in artifact["outputs"]] == ["cls_prob", "loc_preds"]
        delta = artifact["accuracy_delta"]
        assert delta["images"] == 12 and delta["reference_map_50"] == 1.0
        assert delta["map_50"] == 1.0 and delta["points"] == 0.0
    assert by_precision["float32"]["accuracy_delta"]["max_abs_difference"] < 1e-5
    files = package_files(compiled / "out" / "jetson_nano" / "model.tar.gz")
    assert {"manifest.json", "anchors.npy", "detector-float32.onnx", "detector-int8.onnx"} <= set(files)
    anchors = np.load(io.BytesIO(files["anchors.npy"]))
    np.testing.assert_allclose(anchors, [RED_BOX, BLUE_BOX], atol=1e-7)


def test_the_float32_heads_and_decode_find_the_squares(compiled: Path, tmp_path: Path) -> None:
    """What the car does, here in the venv's onnxruntime: heads -> edge.detect.decode."""
    import onnxruntime

    files = package_files(compiled / "out" / "jetson_nano" / "model.tar.gz")
    manifest = json.loads(files["manifest.json"])
    (tmp_path / "heads.onnx").write_bytes(files["detector-float32.onnx"])
    session = onnxruntime.InferenceSession(str(tmp_path / "heads.onnx"), providers=["CPUExecutionProvider"])
    anchors = np.load(io.BytesIO(files["anchors.npy"]))
    transform = PhotoTransform.from_dict(manifest["input_transform"])
    annotations = [
        json.loads(line) for line in (compiled / "test" / "annotations.jsonl").read_text().splitlines()
    ]
    for record in annotations:
        cls_prob, loc_preds = session.run(
            ["cls_prob", "loc_preds"], {"data": prepare(compiled / "test" / record["image"], transform)}
        )
        found = decode(cls_prob[0], loc_preds[0], anchors, **manifest["decode"])
        confident = found[found[:, 1] >= 0.5]
        expected = sorted(record["boxes"])
        got = sorted(confident[:, [0, 2, 3, 4, 5]].tolist())
        np.testing.assert_allclose(np.array(got).reshape(-1, 5), np.array(expected).reshape(-1, 5), atol=1e-5)


def test_the_dry_run_writes_neos_input_the_deploy_symbol_with_multibox_detection(
    mxnet_python: str, compiled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dry"
    done = run_in_mxnet(
        mxnet_python,
        [str(REPO / "tests" / "model" / "detection_standin.py"), "compile",
         *("--model", str(compiled / "model"), "--train", str(compiled / "train")),
         *("--test", str(compiled / "test"), "--output", str(out), "--mode", "dry-run"),
         *("--edge-targets", "jetson_nano"),
         *("--output-s3-uri", "s3://robocar-data-123456789012/compiled"),
         *("--role-arn", "arn:aws:iam::123456789012:role/robocar-neo")],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    request = json.loads((out / "jetson_nano" / "create_compilation_job.json").read_text())
    assert request["InputConfig"]["Framework"] == "MXNET"
    assert json.loads(request["InputConfig"]["DataInputConfig"]) == {"data": [1, 3, 64, 64]}
    files = package_files(out / "neo-input.tar.gz")
    assert sorted(files) == ["detector-deploy-0000.params", "detector-deploy-symbol.json"]
    operators = {node["op"] for node in json.loads(files["detector-deploy-symbol.json"])["nodes"]}
    assert "_contrib_MultiBoxDetection" in operators
