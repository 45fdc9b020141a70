"""The car's own local client only reads the workspace; its upload writes through edge.workspace."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_edge_upload import BUCKET, make_uploader, write_session

from edge import upload
from edge.cli import main as edge_main
from edge.local_readers import LocalS3Reader
from edge.settings import EXAMPLE_VALUES
from pipelines.local.s3 import LocalS3Client


def test_a_car_without_the_control_plane_uploads_into_the_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    LocalS3Client(workspace).create_bucket(Bucket=BUCKET)
    reader = LocalS3Reader(workspace)
    assert not hasattr(reader, "put_object")  # the car's client: read-only
    write_session(tmp_path / "tubs" / "s1", image_bytes=[1000, 2000])
    queue = upload.UploadQueue(tmp_path / "car" / "upload")

    report = upload.upload_pass(tmp_path / "tubs", queue, make_uploader(reader, queue))
    again = upload.upload_pass(tmp_path / "tubs", queue, make_uploader(reader, queue))

    assert report.ok and again.ok
    (item,) = LocalS3Client(workspace).list_objects_v2(Bucket=BUCKET, Prefix="robocar/raw/")["Contents"]
    data = LocalS3Client(workspace).uri_to_path(f"s3://{BUCKET}/{item['Key']}").read_bytes()
    assert item["Key"] == f"robocar/raw/car-7/{hashlib.sha256(data).hexdigest()}.tar.gz"


def test_locally_the_upload_goes_to_the_local_pipelines_bucket_unless_told_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    workspace = tmp_path / "ws"
    LocalS3Client(workspace).create_bucket(Bucket=EXAMPLE_VALUES["bucket"])  # what `robocar run` uses
    write_session(tmp_path / "tubs" / "s1", image_bytes=[100])
    common = ["upload", "--tubs", str(tmp_path / "tubs"), "--root", str(tmp_path / "car"), "--once"]

    assert edge_main([*common, "--aws", "--region", "us-east-1"]) == 2  # AWS has no default bucket
    assert "--bucket" in capsys.readouterr().err
    assert edge_main([*common, "--workspace", str(workspace), "--car-id", "car-7"]) == 0

    (item,) = LocalS3Client(workspace).list_objects_v2(
        Bucket=EXAMPLE_VALUES["bucket"], Prefix="robocar/raw/car-7/"
    )["Contents"]
    assert item["Key"].endswith(".tar.gz")
