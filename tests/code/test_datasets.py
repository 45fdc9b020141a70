"""pipelines/datasets.py: a raw prefix snapshotted into a manifest named by its content (local S3, moto)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from pipelines import datasets
from pipelines.aws_rules import request_problems
from pipelines.local.s3 import LocalS3Client

BUCKET = "robocar-data-123456789012"
RAW = f"s3://{BUCKET}/robocar/raw/"
DATASETS = f"s3://{BUCKET}/robocar/datasets/"
TUB = {"tub_1/manifest.json": b"{}", "tub_1/catalog_0.catalog": b"{'a': 1}", "archive.tar.gz": b"gz"}


@pytest.fixture(params=["local", "moto"])
def s3(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "local":
        client: Any = LocalS3Client(tmp_path)
        client.create_bucket(Bucket=BUCKET)
        yield client
        return
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})  # as ours
        yield client


def put(s3: Any, files: dict[str, bytes]) -> None:
    for key, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=f"robocar/raw/{key}", Body=body)


def read(s3: Any, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_a_snapshot_is_a_manifest_named_by_the_keys_and_etags(s3: Any) -> None:
    put(s3, TUB)
    taken = datasets.snapshot(s3, RAW, DATASETS)
    listing = {
        "prefix": RAW,
        "objects": [[key, hashlib.md5(TUB[key]).hexdigest()] for key in sorted(TUB)],  # single-part ETag
    }
    digest = hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()
    assert taken == datasets.Snapshot(RAW, f"{DATASETS}{digest}.manifest", digest, 3, written=True)
    assert json.loads(read(s3, taken.manifest_uri)) == [{"prefix": RAW}, *sorted(TUB)]  # ManifestFile format
    assert datasets.read_manifest(read(s3, taken.manifest_uri)) == (RAW, sorted(TUB))


def test_the_name_changes_when_and_only_when_the_data_changes(s3: Any) -> None:
    put(s3, TUB)
    first = datasets.snapshot(s3, RAW, DATASETS)
    put(s3, {"tub_1/manifest.json": b"{}"})  # uploaded again, the same bytes: the same ETag
    assert datasets.snapshot(s3, RAW, DATASETS).manifest_uri == first.manifest_uri
    put(s3, {"tub_2/manifest.json": b"{}"})  # a new tub
    second = datasets.snapshot(s3, RAW, DATASETS)
    put(s3, {"tub_2/manifest.json": b'{"changed": 1}'})  # a changed object
    third = datasets.snapshot(s3, RAW, DATASETS)
    assert len({first.manifest_uri, second.manifest_uri, third.manifest_uri}) == 3
    assert (second.objects, third.objects) == (4, 4)
    s3.put_object(Bucket=BUCKET, Key="robocar/rawer/x", Body=b"not under raw/")
    s3.put_object(Bucket=BUCKET, Key="robocar/preprocess/e/train/shard-00000.npz", Body=b"step output")
    assert datasets.snapshot(s3, RAW, DATASETS).manifest_uri == third.manifest_uri


def test_taking_the_same_snapshot_again_writes_nothing(s3: Any) -> None:
    put(s3, TUB)
    first = datasets.snapshot(s3, RAW, DATASETS)
    again = datasets.snapshot(s3, RAW, DATASETS)
    assert (again.manifest_uri, again.written) == (first.manifest_uri, False)
    key = first.manifest_uri.removeprefix(f"s3://{BUCKET}/")
    if not isinstance(s3, LocalS3Client):  # a versioned bucket keeps every write: there was one
        versions = s3.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]
        assert len(versions) == 1


def test_an_empty_prefix_is_no_dataset(s3: Any) -> None:
    with pytest.raises(datasets.DatasetError, match=f"no input data at {RAW}"):
        datasets.snapshot(s3, RAW, DATASETS)


def test_folder_markers_are_not_data() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        put(s3, {"tub_1/": b"", "tub_1/manifest.json": b"{}"})  # the console's "Create folder"
        taken = datasets.snapshot(s3, RAW, DATASETS)
        assert datasets.read_manifest(read(s3, taken.manifest_uri)) == (RAW, ["tub_1/manifest.json"])


def test_the_input_data_url_is_a_given_manifest_or_a_fresh_snapshot(s3: Any) -> None:
    put(s3, TUB)
    given = f"{DATASETS}hand-made.manifest"
    assert datasets.resolve_input_data_url(s3, given, bucket=BUCKET, prefix="robocar") == (given, None)
    url, taken = datasets.resolve_input_data_url(s3, None, bucket=BUCKET, prefix="robocar/")
    assert taken is not None and url == taken.manifest_uri and taken.prefix_uri == RAW
    s3.put_object(Bucket=BUCKET, Key="elsewhere/tub/manifest.json", Body=b"{}")
    url, other = datasets.resolve_input_data_url(
        s3, f"s3://{BUCKET}/elsewhere", bucket=BUCKET, prefix="robocar"
    )
    assert other is not None and other.prefix_uri == f"s3://{BUCKET}/elsewhere/"
    assert url.startswith(DATASETS) and other.objects == 1
    definition = {"Parameters": [{"Name": "InputDataUrl", "Type": "String"}, {"Name": "E", "Type": "String"}]}
    given = [{"Name": "InputDataUrl", "Value": f"s3://{BUCKET}/elsewhere/"}, {"Name": "E", "Value": "2"}]
    parameters, again = datasets.start_parameters(s3, definition, given, bucket=BUCKET, prefix="robocar")
    assert parameters == [{"Name": "E", "Value": "2"}, {"Name": "InputDataUrl", "Value": url}]
    assert again is not None and (again.manifest_uri, again.written) == (url, False)
    unchanged = datasets.start_parameters(s3, {"Parameters": []}, given, bucket=BUCKET, prefix="p")
    assert unchanged == (given, None)


def test_the_pilots_default_names_no_snapshot() -> None:
    assert datasets.no_snapshot_uri(BUCKET, "robocar") == f"{DATASETS}snapshot-required.manifest"
    assert datasets.is_manifest_uri(datasets.no_snapshot_uri(BUCKET, "a/b"))
    assert not datasets.is_manifest_uri(RAW)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"[not json", "not JSON"),
        (b'{"prefix": "s3://b/p/"}', "JSON array"),
        (b"[]", "JSON array"),
        (b'[{"prefix": "/local/p/"}, "a"]', "first element"),
        (b'["a", "b"]', "first element"),
        (b'[{"prefix": "s3://b/p/"}, ""]', "non-empty keys"),
        (b'[{"prefix": "s3://b/p/"}, 3]', "non-empty keys"),
        (b'[{"prefix": "s3://b/p/"}]', "lists no objects under s3://b/p/"),
    ],
)
def test_a_bad_manifest_is_refused_with_its_reason(document: bytes, message: str) -> None:
    with pytest.raises(datasets.DatasetError, match=message):
        datasets.read_manifest(document)


def test_the_client_request_token_is_one_start_pipeline_execution_accepts() -> None:
    digest = hashlib.sha256(b"dataset").hexdigest()
    token = datasets.client_request_token(digest)
    request = {
        "PipelineName": "robocar-pipeline",
        "PipelineParameters": [{"Name": "InputDataUrl", "Value": f"{DATASETS}{digest}.manifest"}],
        "ClientRequestToken": token,
    }
    assert request_problems("sagemaker", "StartPipelineExecution", request) == []
    assert request_problems("sagemaker", "StartPipelineExecution", {**request, "ClientRequestToken": "short"})
    assert token == datasets.client_request_token(digest)  # derived, not random: a redelivery repeats it
