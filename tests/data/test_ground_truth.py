"""Ground Truth image-classification manifests: image resolution, labels, classes and accounting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from processing.preprocess import main
from processing.shards import load_split

SAMPLE_IMAGES = Path(__file__).resolve().parent / "samples" / "tubs" / "tub_v2" / "images"


def gt_line(ref: str, label: int, name: str, attribute: str = "animal") -> str:
    metadata = {"class-name": name, "confidence": 0.93, "type": "groundtruth/image-classification"}
    return json.dumps({"source-ref": ref, attribute: label, f"{attribute}-metadata": metadata})


def make_dataset(root: Path) -> Path:
    (root / "raw" / "pets").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(30):
        target = root / "raw" / "pets" / f"{i}.jpg"  # where an S3 prefix lands under the input folder
        shutil.copyfile(SAMPLE_IMAGES / f"{i}_cam_image_array_.jpg", target)
    (root / "labels" / "local.jpg").write_bytes((SAMPLE_IMAGES / "40_cam_image_array_.jpg").read_bytes())
    lines = [
        gt_line(f"s3://my-bucket/datasets/raw/pets/{i}.jpg", i % 3, ["cat", "dog", "bird"][i % 3])
        for i in range(30)
    ]
    lines[4] = gt_line("s3://my-bucket/datasets/raw/pets/missing.jpg", 1, "dog")
    lines[7] = gt_line("s3://my-bucket/datasets/raw/pets/7.jpg", 1, "wolf")  # id 1 is "dog"
    lines[9] = '{"source-ref": "s3://my-bucket/x.jpg", "animal": 0'  # truncated
    lines[11] = json.dumps({"source-ref": "s3://my-bucket/datasets/raw/pets/11.jpg"})  # no label attribute
    lines.append(gt_line("local.jpg", 4, "fish"))  # relative to the manifest's folder; id 3 never seen
    manifest = root / "labels" / "output.manifest"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_manifest_is_auto_detected_and_accounted_for(tmp_path):
    make_dataset(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["--input", str(tmp_path / "in"), "--output", str(out), "--workers", "1"]) == 0
    report = json.loads((out / "report" / "data_report.json").read_text())
    (source,) = report["tubs"]
    assert source["tub"] == "labels/output.manifest" and source["format"] == "ground-truth"
    assert (source["read"], source["accepted"], source["rejected"], source["deleted"]) == (31, 27, 4, 0)
    assert {r["index"]: r["reason"].split(":")[0] for r in source["rejections"]} == {
        4: "image missing",
        7: "label conflict",
        9: "malformed record",
        11: "schema",
    }
    labels, classes = [], None
    for split in ("train", "validation", "test"):
        arrays, dataset = load_split(out / split)
        assert "angle" not in arrays and arrays["label"].dtype == np.int64
        labels.extend(arrays["label"].tolist())
        classes = dataset["classes"]
    assert classes == ["cat", "dog", "bird", "class_3", "fish"]
    assert sorted(labels).count(4) == 1 and len(labels) == 27


def test_explicit_manifest_and_label_attribute(tmp_path):
    manifest = make_dataset(tmp_path / "in")
    out = tmp_path / "out"
    args = ["--ground-truth", str(manifest), "--label-attribute", "animal", "--workers", "1"]
    assert main(["--input", str(tmp_path / "in"), "--output", str(out), *args]) == 0
    assert (
        main(["--input", str(tmp_path / "in"), "--output", str(out), "--ground-truth", "nope.manifest"]) == 2
    )
