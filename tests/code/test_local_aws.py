"""Local AWS (pipelines/local/s3.py, pipelines/local/registry.py, edge/aws.py): S3 as a folder, the
on-disk Model Registry, boto3 shapes."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from edge import aws
from edge.s3_uri import split_s3_uri
from edge.workspace import WorkspaceLayout, write_object
from pipelines.local.registry import LocalSageMakerClient
from pipelines.local.s3 import LocalS3Client

GROUP = "robocar-pilots"
CONTAINERS = {"Containers": [{"Image": "tf-serving:2.21", "ModelDataUrl": "s3://b/model.tar.gz"}]}


@pytest.fixture
def s3(tmp_path: Path) -> LocalS3Client:
    client = LocalS3Client(tmp_path, "us-east-1")
    client.create_bucket(Bucket="bucket")
    return client


@pytest.fixture
def sm(tmp_path: Path) -> LocalSageMakerClient:
    client = LocalSageMakerClient(tmp_path, "eu-west-1")
    client.create_model_package_group(ModelPackageGroupName=GROUP, ModelPackageGroupDescription="pilots")
    return client


def error_code(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.response["Error"]["Code"]


# ---------------------------------------------------------------- S3
def test_put_get_head_round_trip_on_disk(s3: LocalS3Client, tmp_path: Path) -> None:
    put = s3.put_object(Bucket="bucket", Key="a/b/c.json", Body=b'{"x": 1}')
    assert (tmp_path / "s3" / "bucket" / "a" / "b" / "c.json").read_bytes() == b'{"x": 1}'
    got = s3.get_object(Bucket="bucket", Key="a/b/c.json")
    assert got["Body"].read() == b'{"x": 1}'
    assert got["ETag"] == put["ETag"] and got["ContentLength"] == 8
    head = s3.head_object(Bucket="bucket", Key="a/b/c.json")
    assert isinstance(head["LastModified"], datetime) and head["LastModified"].tzinfo is not None
    s3.put_object(Bucket="bucket", Key="s.txt", Body="text")
    assert s3.get_object(Bucket="bucket", Key="s.txt", Range="bytes=1-2")["Body"].read() == b"ex"


def test_missing_key_errors_like_boto3(s3: LocalS3Client, tmp_path: Path) -> None:
    with pytest.raises(s3.exceptions.NoSuchKey) as excinfo:
        s3.get_object(Bucket="bucket", Key="nope")
    assert isinstance(excinfo.value, ClientError) and error_code(excinfo) == "NoSuchKey"
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket="bucket", Key="nope")
    assert error_code(excinfo) == "404"
    with pytest.raises(ClientError) as excinfo:
        s3.download_file("bucket", "nope", str(tmp_path / "x"))
    assert error_code(excinfo) == "404" and not (tmp_path / "x").exists()
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket="other-bucket", Key="k", Body=b"")
    assert error_code(excinfo) == "NoSuchBucket"
    with pytest.raises(ClientError) as excinfo:
        s3.head_bucket(Bucket="other-bucket")
    assert error_code(excinfo) == "404"


def test_keys_that_escape_the_bucket_are_refused(s3: LocalS3Client) -> None:
    for key in ("../evil", "a/../../b", "a//b", "dir/"):
        with pytest.raises(ParamValidationError):
            s3.put_object(Bucket="bucket", Key=key, Body=b"")


def test_upload_download_files(s3: LocalS3Client, tmp_path: Path) -> None:
    source = tmp_path / "model.tar.gz"
    source.write_bytes(b"\x00" * 1000)
    sizes: list[int] = []
    s3.upload_file(str(source), "bucket", "models/m.tar.gz", Callback=sizes.append)
    s3.download_file("bucket", "models/m.tar.gz", str(tmp_path / "out" / "copy.tar.gz"))
    assert (tmp_path / "out" / "copy.tar.gz").read_bytes() == source.read_bytes()
    assert sizes == [1000]


def test_list_objects_v2_prefix_delimiter_and_pagination(s3: LocalS3Client) -> None:
    keys = ["data/tub1/a.json", "data/tub1/b.json", "data/tub2/c.json", "data/top.txt", "other/x", "data-x"]
    for key in keys:
        s3.put_object(Bucket="bucket", Key=key, Body=key.encode())
    listed = s3.list_objects_v2(Bucket="bucket", Prefix="data/")
    assert [c["Key"] for c in listed["Contents"]] == sorted(k for k in keys if k.startswith("data/"))
    assert listed["KeyCount"] == 4 and not listed["IsTruncated"]
    folders = s3.list_objects_v2(Bucket="bucket", Prefix="data/", Delimiter="/")
    assert [p["Prefix"] for p in folders["CommonPrefixes"]] == ["data/tub1/", "data/tub2/"]
    assert [c["Key"] for c in folders["Contents"]] == ["data/top.txt"]
    assert "Contents" not in s3.list_objects_v2(Bucket="bucket", Prefix="nothing/")

    first = s3.list_objects_v2(Bucket="bucket", MaxKeys=4)
    assert first["IsTruncated"] and len(first["Contents"]) == 4
    second = s3.list_objects_v2(Bucket="bucket", MaxKeys=4, ContinuationToken=first["NextContinuationToken"])
    assert [c["Key"] for c in first["Contents"] + second["Contents"]] == sorted(keys)
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="bucket", MaxKeys=2))
    assert [c["Key"] for page in pages for c in page["Contents"]] == sorted(keys)


def test_delete_object_removes_file_and_empty_folders(s3: LocalS3Client, tmp_path: Path) -> None:
    s3.put_object(Bucket="bucket", Key="a/b/c", Body=b"1")
    s3.delete_object(Bucket="bucket", Key="a/b/c")
    s3.delete_object(Bucket="bucket", Key="a/b/c")  # deleting a missing key succeeds, as on S3
    assert not (tmp_path / "s3" / "bucket" / "a").exists()
    assert (tmp_path / "s3" / "bucket").is_dir()


def test_temporary_files_are_never_listed(s3: LocalS3Client, tmp_path: Path) -> None:
    (tmp_path / "s3" / "bucket" / ".tmp-abc.part").write_bytes(b"half")
    s3.put_object(Bucket="bucket", Key="k", Body=b"whole")
    assert [c["Key"] for c in s3.list_objects_v2(Bucket="bucket")["Contents"]] == ["k"]
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["bucket"]


def test_split_s3_uri() -> None:
    assert split_s3_uri("s3://b/k/x") == ("b", "k/x")
    with pytest.raises(ValueError, match="not an s3"):
        split_s3_uri("/tmp/x")


# ---------------------------------------------------------------- registry
def test_group_create_describe_list(sm: LocalSageMakerClient) -> None:
    described = sm.describe_model_package_group(ModelPackageGroupName=GROUP)
    assert described["ModelPackageGroupArn"] == (
        "arn:aws:sagemaker:eu-west-1:123456789012:model-package-group/robocar-pilots"
    )
    assert described["ModelPackageGroupStatus"] == "Completed"
    assert isinstance(described["CreationTime"], datetime)
    sm.create_model_package_group(ModelPackageGroupName="another")
    names = [
        g["ModelPackageGroupName"]
        for g in sm.list_model_package_groups(SortBy="Name")["ModelPackageGroupSummaryList"]
    ]
    assert names == ["another", GROUP]
    with pytest.raises(ClientError) as excinfo:
        sm.create_model_package_group(ModelPackageGroupName=GROUP)
    assert error_code(excinfo) == "ValidationException"
    with pytest.raises(ClientError) as excinfo:
        sm.describe_model_package_group(ModelPackageGroupName="missing")
    assert error_code(excinfo) == "ValidationException" and "does not exist" in str(excinfo.value)
    with pytest.raises(ClientError):
        sm.create_model_package_group(ModelPackageGroupName="bad_name!")


def test_versions_are_numbered_and_arns_follow_aws(sm: LocalSageMakerClient) -> None:
    arns = [
        sm.create_model_package(ModelPackageGroupName=GROUP, InferenceSpecification=CONTAINERS)[
            "ModelPackageArn"
        ]
        for _ in range(3)
    ]
    assert arns == [f"arn:aws:sagemaker:eu-west-1:123456789012:model-package/{GROUP}/{n}" for n in (1, 2, 3)]
    described = sm.describe_model_package(ModelPackageName=arns[1])
    assert described["ModelPackageVersion"] == 2
    assert described["ModelApprovalStatus"] == "PendingManualApproval"
    assert described["InferenceSpecification"] == CONTAINERS
    assert isinstance(described["CreationTime"], datetime)


def test_list_filters_sorts_and_pages(sm: LocalSageMakerClient) -> None:
    statuses = ["Approved", "Rejected", "Approved", "PendingManualApproval", "Approved"]
    for status in statuses:
        sm.create_model_package(ModelPackageGroupName=GROUP, ModelApprovalStatus=status)
    latest = sm.list_model_packages(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
    )["ModelPackageSummaryList"]
    assert [p["ModelPackageVersion"] for p in latest] == [5, 3, 1]
    assert set(latest[0]) >= {
        "ModelPackageArn",
        "ModelPackageGroupName",
        "CreationTime",
        "ModelApprovalStatus",
    }

    first = sm.list_model_packages(ModelPackageGroupName=GROUP, MaxResults=2)
    assert [p["ModelPackageVersion"] for p in first["ModelPackageSummaryList"]] == [1, 2]
    pages = list(sm.get_paginator("list_model_packages").paginate(ModelPackageGroupName=GROUP, MaxResults=2))
    assert [p["ModelPackageVersion"] for page in pages for p in page["ModelPackageSummaryList"]] == [
        1,
        2,
        3,
        4,
        5,
    ]
    with pytest.raises(ClientError):
        sm.list_model_packages(ModelPackageGroupName=GROUP, SortBy="Size")
    assert sm.list_model_packages(ModelPackageGroupName="nobody")["ModelPackageSummaryList"] == []


def test_update_approves_merges_metadata_and_adds_specifications(sm: LocalSageMakerClient) -> None:
    arn = sm.create_model_package(
        ModelPackageGroupName=GROUP,
        CustomerMetadataProperties={"edge:litert:sha256": "aa"},
        AdditionalInferenceSpecifications=[{"Name": "litert", "Containers": [{"Image": "x"}]}],
    )["ModelPackageArn"]
    sm.update_model_package(
        ModelPackageArn=arn,
        ModelApprovalStatus="Approved",
        ApprovalDescription="drives well",
        CustomerMetadataProperties={"edge:onnx:sha256": "bb"},
        AdditionalInferenceSpecificationsToAdd=[{"Name": "onnx", "Containers": [{"Image": "y"}]}],
    )
    described = sm.describe_model_package(ModelPackageName=arn)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == "drives well"
    assert described["CustomerMetadataProperties"] == {"edge:litert:sha256": "aa", "edge:onnx:sha256": "bb"}
    assert [s["Name"] for s in described["AdditionalInferenceSpecifications"]] == ["litert", "onnx"]
    assert described["LastModifiedTime"] >= described["CreationTime"]
    with pytest.raises(ClientError) as excinfo:
        sm.update_model_package(
            ModelPackageArn=arn, AdditionalInferenceSpecificationsToAdd=[{"Name": "onnx", "Containers": [{}]}]
        )
    assert error_code(excinfo) == "ValidationException"


def test_registry_validation_errors(sm: LocalSageMakerClient) -> None:
    cases = [
        lambda: sm.create_model_package(ModelPackageGroupName="missing"),
        lambda: sm.create_model_package(ModelPackageGroupName=GROUP, ModelApprovalStatus="Maybe"),
        lambda: sm.describe_model_package(
            ModelPackageName=f"arn:aws:sagemaker:eu-west-1:123456789012:model-package/{GROUP}/9"
        ),
        lambda: sm.update_model_package(ModelPackageArn="not-an-arn", ModelApprovalStatus="Approved"),
    ]
    for call in cases:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_code(excinfo) == "ValidationException"
    with pytest.raises(ParamValidationError):
        sm.create_model_package(ModelPackageGroupName=GROUP, Colour="red")


def _register_many(root: str, count: int) -> None:
    client = LocalSageMakerClient(root, "us-east-1")
    for _ in range(count):
        client.create_model_package(ModelPackageGroupName=GROUP)


def test_concurrent_processes_get_distinct_versions(tmp_path: Path) -> None:
    LocalSageMakerClient(tmp_path).create_model_package_group(ModelPackageGroupName=GROUP)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_register_many, args=(str(tmp_path), 5)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    listed = LocalSageMakerClient(tmp_path).list_model_packages(ModelPackageGroupName=GROUP)
    assert sorted(p["ModelPackageVersion"] for p in listed["ModelPackageSummaryList"]) == list(range(1, 16))


# ---------------------------------------------------------------- the factory
def test_clients_factory_picks_local_from_argument_or_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(aws.LOCAL_ROOT_ENV, raising=False)
    local = aws.clients(local_root=tmp_path, region="eu-west-1")
    assert local.is_local and isinstance(local.s3, LocalS3Client)
    assert isinstance(local.sagemaker, LocalSageMakerClient)
    monkeypatch.setenv(aws.LOCAL_ROOT_ENV, str(tmp_path))
    assert aws.clients().local_root == tmp_path
    with pytest.raises(ValueError, match="exclude"):
        aws.clients(endpoint_url="http://127.0.0.1:5000")


def test_a_factory_missing_from_the_environment_leaves_the_read_only_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local step in the MXNet environment inherits ROBOCAR_LOCAL_CLIENTS but has no pipelines/ (or no
    botocore): it still reads the registry and S3 the control plane wrote."""
    from edge.local_readers import LocalRegistryReader, LocalS3Reader

    s3 = LocalS3Client(tmp_path)
    s3.create_bucket(Bucket="bucket")
    s3.put_object(Bucket="bucket", Key="model.tar.gz", Body=b"model")
    LocalSageMakerClient(tmp_path).create_model_package_group(ModelPackageGroupName=GROUP)
    monkeypatch.setenv(aws.LOCAL_CLIENTS_ENV, "robocar_no_such_module.client:validated_local_clients")
    readers = aws.clients(local_root=tmp_path)
    assert type(readers.s3) is LocalS3Reader and type(readers.sagemaker) is LocalRegistryReader
    assert readers.s3.get_object(Bucket="bucket", Key="model.tar.gz")["Body"].read() == b"model"
    assert readers.sagemaker.list_model_packages(ModelPackageGroupName=GROUP)["ModelPackageSummaryList"] == []
    monkeypatch.setenv(aws.LOCAL_CLIENTS_ENV, "edge.local_readers:no_such_function")  # a bug, not absence
    with pytest.raises(AttributeError, match="no_such_function"):
        aws.clients(local_root=tmp_path)


def test_clients_factory_returns_boto3_without_a_local_root(monkeypatch) -> None:
    monkeypatch.delenv(aws.LOCAL_ROOT_ENV, raising=False)
    remote = aws.clients(region="us-east-1", endpoint_url="http://127.0.0.1:1")
    assert not remote.is_local
    assert remote.s3.meta.endpoint_url == "http://127.0.0.1:1"
    assert remote.sagemaker.meta.region_name == "us-east-1"


def test_without_botocore_errors_keep_the_same_shape(tmp_path: Path) -> None:
    """On a car without boto3 the local clients raise their own ClientError with the same response."""
    script = (
        "import sys; sys.modules['botocore'] = None; sys.modules['botocore.exceptions'] = None\n"
        "from edge.aws_errors import ClientError, LocalClientError\n"
        "from edge.local_readers import LocalS3Reader\n"
        "assert ClientError is LocalClientError\n"
        "s3 = LocalS3Reader(sys.argv[1]); (s3.base / 'bucket').mkdir(parents=True)\n"
        "try:\n    s3.get_object(Bucket='bucket', Key='missing')\n"
        "except s3.exceptions.NoSuchKey as e:\n    print(e.response['Error']['Code'], e.operation_name)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=repo, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["NoSuchKey", "GetObject"]


def test_an_object_the_car_writes_is_where_local_s3_reads_it(tmp_path: Path) -> None:
    """``edge.workspace.write_object`` (the car's upload into a local workspace) and local S3 share one
    layout: what one writes, the other lists, heads and reads; the key rule holds for both."""
    s3 = LocalS3Client(tmp_path)
    s3.create_bucket(Bucket="bucket")
    layout = WorkspaceLayout(tmp_path)
    etag = write_object(layout, "bucket", "cars/car-1/tub_1.tar.gz", b"tub bytes")
    assert s3.head_object(Bucket="bucket", Key="cars/car-1/tub_1.tar.gz")["ETag"] == etag
    assert s3.get_object(Bucket="bucket", Key="cars/car-1/tub_1.tar.gz")["Body"].read() == b"tub bytes"
    listed = s3.list_objects_v2(Bucket="bucket")["Contents"]
    assert [(o["Key"], o["ETag"]) for o in listed] == [("cars/car-1/tub_1.tar.gz", etag)]
    with pytest.raises(ValueError, match="'..' segment"):
        write_object(layout, "bucket", "cars/../escape", b"x")
    with pytest.raises(s3.exceptions.NoSuchBucket):
        write_object(layout, "no-such-bucket", "k", b"x")
    assert not any(p.name.startswith(".tmp-") for p in (tmp_path / "s3").rglob("*"))
