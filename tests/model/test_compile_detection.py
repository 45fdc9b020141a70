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
from edge.photos import PhotoTransform, prepare, prepare_for

sys.path.insert(0, str(Path(__file__).parent))
from detection_standin import BLUE_BOX, CLASSES, RED_BOX, write_model, write_photos  # noqa: E402


def compile_standin(python: str, root: Path, pixel_scaled: bool = False) -> Path:
    write_photos(root / "train", 24, seed=1)
    write_photos(root / "test", 12, seed=2)
    write_model(root / "model", pixel_scaled)
    done = run_in_mxnet(
        python,
        [str(REPO / "tests" / "model" / "detection_standin.py"), "compile",
         *("--model", str(root / "model"), "--train", str(root / "train"), "--test", str(root / "test")),
         *("--output", str(root / "out"), "--mode", "local", "--edge-targets", "jetson_nano,rasp4b")],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def compiled(mxnet_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_standin(mxnet_python, tmp_path_factory.mktemp("compile-detection"))


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
    # its input is pixel / 255, which the int8 quantiser leaves float (a mean first): no pixel artifact
    assert [a["file"] for a in manifest["artifacts"]] == ["detector-int8.onnx", "detector-float32.onnx"]
    by_precision = {a["precision"]: a for a in manifest["artifacts"]}
    assert manifest["default"] == "detector-int8.onnx"
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


def test_int8_heads_of_a_pixel_scaled_input_take_pixel_blocks_and_answer_the_same(
    mxnet_python: str, tmp_path: Path
) -> None:
    """An input of (pixel - 127) / 128 and a stride-2 first convolution, as the real detector's: the
    package leads with the int8 heads fed 2 x 2 pixel blocks (processing/pixel_input.py), which answer
    what the int8 heads answer on the float input, bit for bit, and find the squares."""
    import onnxruntime

    root = compile_standin(mxnet_python, tmp_path, pixel_scaled=True)
    files = package_files(root / "out" / "rasp4b" / "model.tar.gz")
    manifest = json.loads(files["manifest.json"])
    assert [a["file"] for a in manifest["artifacts"]] == [
        "detector-int8-pixels.onnx", "detector-int8.onnx", "detector-float32.onnx"
    ]  # fmt: skip
    assert manifest["default"] == "detector-int8-pixels.onnx"
    pixels_entry, int8_entry, _ = manifest["artifacts"]
    assert pixels_entry["input"] == {"name": "pixels", "dtype": "uint8", "layout": "NHWC", "block": 2,
                                     "shape": [1, 32, 32, 12]}  # fmt: skip
    assert pixels_entry["accuracy_delta"] == int8_entry["accuracy_delta"]
    assert pixels_entry["accuracy_delta"]["map_50"] == 1.0
    assert "fed uint8 2 x 2 pixel blocks" in pixels_entry["quantization_scheme"]
    sessions = {}
    for name in ("detector-int8-pixels.onnx", "detector-int8.onnx"):
        (tmp_path / name).write_bytes(files[name])
        sessions[name] = onnxruntime.InferenceSession(
            str(tmp_path / name), providers=["CPUExecutionProvider"]
        )
    transform = PhotoTransform.from_dict(manifest["input_transform"])
    anchors = np.load(io.BytesIO(files["anchors.npy"]))
    for photo in sorted((root / "test" / "images").iterdir()):
        heads = sessions["detector-int8-pixels.onnx"].run(
            None, {"pixels": prepare_for(photo, transform, pixels_entry["input"])}
        )
        expected = sessions["detector-int8.onnx"].run(None, {"data": prepare(photo, transform)})
        for got, want in zip(heads, expected, strict=True):
            np.testing.assert_array_equal(got, want)
        assert len(decode(heads[0][0], heads[1][0], anchors, threshold=0.5)) >= 1
