"""Artifact download, verification and safe extraction: hostile archives are refused, leaving nothing."""

from __future__ import annotations

import io
import tarfile

import pytest
from edge_fixtures import sha256, tar_bytes

from edge import artifacts
from edge.artifacts import ExtractLimits, IntegrityError, UnsafeArchiveError, safe_extract


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def write(tmp_path, data: bytes):
    path = tmp_path / "model.tar.gz"
    path.write_bytes(data)
    return path


def test_extracts_plain_files_and_folders(tmp_path):
    archive = write(tmp_path, tar_bytes({"./manifest.json": b"{}", "fp32/model.tflite": b"\x00" * 100}))
    files = safe_extract(archive, tmp_path / "out")
    assert sorted(files) == ["fp32/model.tflite", "manifest.json"]
    assert (tmp_path / "out" / "fp32" / "model.tflite").read_bytes() == b"\x00" * 100


@pytest.mark.parametrize(
    ("members", "extra", "message"),
    [
        ({"../evil.txt": b"x"}, [], "'..'"),
        ({"ok/../../evil.txt": b"x"}, [], "'..'"),
        ({"/etc/evil.txt": b"x"}, [], "absolute path"),
        ({}, [special("link", tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
        ({"model.bin": b"x"}, [special("hard", tarfile.LNKTYPE, "model.bin")], "is a link"),
        ({}, [special("dev", tarfile.CHRTYPE)], "device"),
        ({}, [special("fifo", tarfile.FIFOTYPE)], "device"),
        ({"a\\..\\b": b"x"}, [], "backslash"),
    ],
)
def test_hostile_members_are_refused(tmp_path, members, extra, message):
    archive = write(tmp_path, tar_bytes({"manifest.json": b"{}", **members}, extra=extra))
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "a refused archive leaves no folder behind"
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_then_file_through_it_is_refused(tmp_path):
    # The classic two-step escape: a link to outside, then a file written "inside" the link.
    archive = write(
        tmp_path,
        tar_bytes({"escape/evil.txt": b"x"}, extra=[special("escape", tarfile.SYMTYPE, str(tmp_path))]),
    )
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (ExtractLimits(max_members=2), "more than 2 members"),
        (ExtractLimits(max_file_bytes=99), "over the 99-byte limit"),
        (ExtractLimits(max_total_bytes=150), "more than 150 bytes"),
    ],
)
def test_limits(tmp_path, limits, message):
    archive = write(tmp_path, tar_bytes({"a": b"1" * 100, "b": b"2" * 100, "c": b"3"}))
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, tmp_path / "out", limits)


def test_duplicate_member_and_garbage_refused(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for payload in (b"first", b"second"):
            info = tarfile.TarInfo("model.bin")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(UnsafeArchiveError, match="twice"):
        safe_extract(write(tmp_path, buffer.getvalue()), tmp_path / "out")
    with pytest.raises(UnsafeArchiveError, match="not a readable tar"):
        safe_extract(write(tmp_path, b"not a tar at all"), tmp_path / "out2")


class Body(io.BytesIO):
    pass


class FakeS3:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def get_object(self, *, Bucket, Key):  # noqa: N803 (boto3 names)
        assert (Bucket, Key) == ("bucket", "path/model.tar.gz")
        return {"Body": Body(self.data)}


def test_fetch_verified_keeps_only_matching_bytes(tmp_path):
    data = tar_bytes({"m": b"x"})
    dest = tmp_path / "dl" / "a.tar.gz"
    artifacts.fetch_verified(FakeS3(data), "s3://bucket/path/model.tar.gz", dest, sha256(data).upper())
    assert dest.read_bytes() == data
    with pytest.raises(IntegrityError, match="SHA-256 mismatch"):
        artifacts.fetch_verified(
            FakeS3(data + b"!"), "s3://bucket/path/model.tar.gz", tmp_path / "b", sha256(data)
        )
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.part").exists()
    with pytest.raises(IntegrityError, match="limit"):
        artifacts.fetch_verified(
            FakeS3(data), "s3://bucket/path/model.tar.gz", tmp_path / "c", sha256(data), max_bytes=5
        )


@pytest.mark.parametrize("bad", ["http://x/y", "s3://bucket", "s3:///key"])
def test_bad_uri(bad):
    with pytest.raises(artifacts.ArtifactError, match="URI"):
        artifacts.parse_s3_uri(bad)


def test_bad_digest():
    with pytest.raises(artifacts.ArtifactError, match="not a SHA-256"):
        artifacts.normalize_sha256("abc")
