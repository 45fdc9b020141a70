"""The car against what it may be sent: every hostile or broken package is refused, the car keeps driving.

Each class of input is tried as an attacker or a careless pipeline would send it, through the same
paths the car uses (``robocar-edge pull``/``run`` on the local registry, the agent, the drive loop).
Every test asserts the refusal, what the car kept (current model, the rejected list) and, for the
archive bombs, the bounded cost. Archives are built in memory, models are a few KiB: the suite is fast.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import io
import json
import logging
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from edge_fixtures import (
    BUCKET,
    GROUP,
    SAMPLE_TUBS,
    TARGET,
    fake_model,
    litert_pilot_package,
    onnx_pilot_package,
    pull,
    register,
    sha256,
    tar_bytes,
)

from edge import agent as agent_mod
from edge import artifacts, drive, sources
from edge.artifacts import ExtractLimits, UnsafeArchiveError, safe_extract
from edge.cli import main as edge_main

TUB_V2 = SAMPLE_TUBS / "tub_v2"
MIB = 1 << 20


# ---- hostile archives, built in memory ------------------------------------------------------------------
def gnu_longname_bomb(kind: bytes = tarfile.GNUTYPE_LONGNAME, declared: int = 3 << 30) -> bytes:
    """A 0.4 MB plain tar whose first header declares a 3 GB long name (or pax header, ``kind``)."""
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = kind, declared
    return header.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * (400 << 10)


def tar_of(entries: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=fmt) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = b"x", **pax: str):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.pax_headers = pax
    return info, data if kind == tarfile.REGTYPE else None


def folder_then_file() -> bytes:
    return tar_of([entry("manifest.json", data=b"{}"), entry("a", tarfile.DIRTYPE), entry("a")])


def file_then_folder() -> bytes:
    return tar_of([entry("manifest.json", data=b"{}"), entry("a"), entry("a", tarfile.DIRTYPE)])


def file_then_file_under_it() -> bytes:
    return tar_of([entry("manifest.json", data=b"{}"), entry("a"), entry("a/b")])


def zip_of(members: dict[str, bytes], *, flag: int = 0, method: int | None = None) -> bytes:
    """A zip whose local and central headers are patched to say ``flag`` (1: encrypted) or ``method``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    data = bytearray(buffer.getvalue())
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(signature)
        while at >= 0:
            data[at + flag_at] |= flag
            if method is not None:
                data[at + method_at : at + method_at + 2] = method.to_bytes(2, "little")
            at = data.find(signature, at + 4)
    return bytes(data)


def truncated(archive: bytes) -> bytes:
    return archive[: len(archive) // 2]


def model_members(package: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(package)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}


def tweaked(
    package: bytes, *, manifest: dict | None = None, artifact: dict | None = None, files: dict | None = None
) -> bytes:
    """``package`` with its manifest (top level or first artifact) or its files changed."""
    members = model_members(package)
    document = json.loads(members["manifest.json"])
    document.update(manifest or {})
    document["artifacts"][0].update(artifact or {})
    members.update(files or {})
    members["manifest.json"] = json.dumps(document).encode()
    return tar_bytes(members)


BIG_PILOT = onnx_pilot_package("big")
ONNX_BYTES = model_members(BIG_PILOT)["pilot.onnx"]

HOSTILE_ARCHIVES: dict[str, Callable[[], bytes]] = {
    "a folder and a file of the same name": folder_then_file,
    "a file and then a folder of the same name": file_then_folder,
    "a file used as a folder": file_then_file_under_it,
    "a 300-character member name": lambda: tar_bytes({"manifest.json": b"{}", "m" * 300: b"x"}),
    "a truncated gzip whose registry SHA matches": lambda: truncated(onnx_pilot_package("cut")),
    "a zip with an encrypted member": lambda: zip_of({"manifest.json": b"{}"}, flag=1),
    "a zip with an unknown compression method": lambda: zip_of({"manifest.json": b"{}"}, method=99),
    "a GNU long-name header of 3 GB": gnu_longname_bomb,
    "a pax header of 3 GB": lambda: gnu_longname_bomb(tarfile.XHDTYPE),
    "a sparse member": lambda: tar_of(
        [entry("manifest.json", data=b"{}"), entry("s", tarfile.GNUTYPE_SPARSE)]
    ),
    "a pax-described sparse member": lambda: tar_of(
        [entry("manifest.json", data=b"{}"), entry("s", **{"GNU.sparse.major": "1", "GNU.sparse.minor": "0"})]
    ),
    "a pax header saying a member is 1 TiB": lambda: tar_of(
        [entry("manifest.json", data=b"{}"), entry("model.bin", size=str(1 << 40))]
    ),
    "a bzip2-compressed tar": lambda: bz2.compress(model_members_tar(onnx_pilot_package("bz"))),
    "a symlink out": lambda: tar_of([entry("manifest.json", data=b"{}"), link("pilot.onnx", "/etc/passwd")]),
    "an absolute member path": lambda: tar_bytes({"manifest.json": b"{}", "/tmp/evil": b"x"}),
    "a member climbing out": lambda: tar_bytes({"manifest.json": b"{}", "../evil": b"x"}),
    "a control character in a name": lambda: tar_bytes({"manifest.json": b"{}", "a\nb": b"x"}),
    "not an archive": lambda: b"\x00garbage" * 100,
    "an empty archive": lambda: tar_bytes({}),
}


def link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def model_members_tar(package: bytes) -> bytes:
    """The same members as ``package`` in an uncompressed tar (to recompress another way)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in model_members(package).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


HOSTILE_PACKAGES: dict[str, Callable[[Path], bytes]] = {
    # what runs must be what was verified
    "a manifest file that is an absolute path": lambda outside: tweaked(
        BIG_PILOT, artifact={"file": str(outside)}
    ),
    "a manifest file climbing out": lambda outside: tweaked(BIG_PILOT, artifact={"file": "../pilot.onnx"}),
    "a model file unlike its manifest digest": lambda _: tweaked(
        BIG_PILOT, files={"pilot.onnx": ONNX_BYTES + b"\0"}
    ),
    "a model file without a digest": lambda _: tweaked(BIG_PILOT, artifact={"sha256": None}),
    "a model file of another size": lambda _: tweaked(BIG_PILOT, artifact={"size_bytes": 7}),
    "a manifest listing a missing file": lambda _: tweaked(BIG_PILOT, artifact={"file": "absent.onnx"}),
    # manifests a careless pipeline could write
    "a manifest that is not JSON": lambda _: tar_bytes({"manifest.json": b"{not json"}),
    "a manifest nested 100,000 deep": lambda _: tar_bytes({"manifest.json": b"[" * 100_000 + b"]" * 100_000}),
    "a manifest over 1 MiB": lambda _: tar_bytes({"manifest.json": b" " * (MIB + 1) + b"{}"}),
    "a model_type nobody knows": lambda _: tweaked(BIG_PILOT, manifest={"model_type": "banana"}),
    "a throttle_range that is text": lambda _: tweaked(BIG_PILOT, manifest={"throttle_range": "fast"}),
    "a model file that is not a model": lambda _: tweaked(
        BIG_PILOT, files={"pilot.onnx": b"junk"}, artifact={"sha256": sha256(b"junk"), "size_bytes": 4}
    ),
    # models whose answers would reach the wheels
    "a raw throttle head of 50 (ONNX Runtime)": lambda _: onnx_pilot_package("t50", throttle=50.0),
    "a raw throttle head of 50 (LiteRT)": lambda _: litert_pilot_package("t50", throttle=50.0),
    "categorical heads that are not probabilities (ONNX Runtime)": lambda _: onnx_pilot_package(
        "logits", model_type="categorical", softmax=False
    ),
    "categorical heads that are not probabilities (LiteRT)": lambda _: litert_pilot_package(
        "logits", model_type="categorical", softmax=False
    ),
    "a model that is NaN on dark frames": lambda _: onnx_pilot_package("dark", nan_when_dark=True),
    "a model that is always NaN": lambda _: onnx_pilot_package("nan", angle_bias=float("nan")),
}


# ---- a car on the local registry ----------------------------------------------------------------------
def run_car(tmp_path: Path, *extra: str) -> int:
    return edge_main(
        ["run", "--root", str(tmp_path / "car"), "--local-root", str(tmp_path / "workspace"),
         "--group", GROUP, "--target", TARGET, "--source", str(TUB_V2), "--quiet", *extra]
    )  # fmt: skip


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "car" / "state.json").read_text())


def current_arn(tmp_path: Path) -> str | None:
    current = state(tmp_path)["current"]
    return current["model_package_arn"] if current else None


def assert_refused_in_one_line(capsys) -> str:
    out, err = capsys.readouterr()
    assert out.startswith("refused: ") and out.count("\n") == 1, out
    assert "Traceback" not in out + err
    return out


@pytest.mark.parametrize("make", HOSTILE_ARCHIVES.values(), ids=HOSTILE_ARCHIVES.keys())
def test_a_hostile_archive_is_rejected_once_and_the_car_keeps_its_model(car_workspace, capsys, make):
    tmp_path, aws = car_workspace
    good = register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    capsys.readouterr()
    bad = register(aws.sagemaker, aws.s3, make(), key="m/2/model.tar.gz")  # the registry SHA matches
    assert pull(tmp_path) == 1
    out = assert_refused_in_one_line(capsys)
    assert bad in out and f"keeping {good}" in out
    assert current_arn(tmp_path) == good
    assert [key.split("#")[0] for key in state(tmp_path)["rejected"]] == [bad]
    assert not [p for p in (tmp_path / "car" / "models").iterdir() if p.name.startswith(".staging")]
    assert pull(tmp_path) == 0, "the rejected package is not tried again"
    assert capsys.readouterr().out.startswith("up-to-date"), "and not reported again"


@pytest.mark.parametrize("make", HOSTILE_PACKAGES.values(), ids=HOSTILE_PACKAGES.keys())
def test_a_package_that_would_drive_unverified_or_wild_is_rejected(car_workspace, capsys, make):
    tmp_path, aws = car_workspace
    outside = tmp_path / "outside.onnx"  # a working model the registry never vouched for
    outside.write_bytes(ONNX_BYTES)
    good = register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    capsys.readouterr()
    bad = register(aws.sagemaker, aws.s3, make(outside), key="m/2/model.tar.gz")
    assert pull(tmp_path) == 1
    out = assert_refused_in_one_line(capsys)
    assert bad in out
    assert current_arn(tmp_path) == good
    assert [key.split("#")[0] for key in state(tmp_path)["rejected"]] == [bad]


def test_refusal_reasons_name_what_is_wrong(tmp_path):
    expected = {
        "a folder and a file of the same name": "both a folder and a file",
        "a 300-character member name": "NAME_MAX",
        "a truncated gzip whose registry SHA matches": "not a readable tar.gz archive: EOFError",
        "a zip with an encrypted member": "is encrypted",
        "a zip with an unknown compression method": "compression method 99",
        "a GNU long-name header of 3 GB": "extension header declares 3221225472 bytes",
        "a sparse member": "sparse",
        "a pax header saying a member is 1 TiB": "is 1099511627776 bytes, over the",
        "a bzip2-compressed tar": "bzip2-compressed",
    }
    reasons = {}
    for number, name in enumerate(expected, start=2):
        archive = tmp_path / f"{number}.bin"
        archive.write_bytes(HOSTILE_ARCHIVES[name]())
        with pytest.raises(UnsafeArchiveError) as refused:
            safe_extract(archive, tmp_path / f"out-{number}")
        reasons[name] = str(refused.value)
        assert not (tmp_path / f"out-{number}").exists()
    assert {name: reason in reasons[name] for name, reason in expected.items()} == dict.fromkeys(
        expected, True
    )


def test_a_new_car_installs_the_newest_good_package_below_bad_ones(car_workspace, capsys):
    tmp_path, aws = car_workspace
    good = register(aws.sagemaker, aws.s3, onnx_pilot_package("good"), key="m/1/model.tar.gz")
    bad = [
        register(
            aws.sagemaker,
            aws.s3,
            HOSTILE_ARCHIVES["a GNU long-name header of 3 GB"](),
            key="m/2/model.tar.gz",
        ),
        register(aws.sagemaker, aws.s3, onnx_pilot_package("t50", throttle=50.0), key="m/3/model.tar.gz"),
    ]
    assert pull(tmp_path) == 0, "one check goes down to the good package"
    out = capsys.readouterr().out
    assert out.startswith(f"installed: now driving with {good}") and all(arn in out for arn in bad)
    assert current_arn(tmp_path) == good
    assert sorted(key.split("#")[0] for key in state(tmp_path)["rejected"]) == sorted(bad)


def test_a_check_tries_a_bounded_number_of_packages_and_the_next_goes_on(car_workspace, capsys):
    tmp_path, aws = car_workspace
    good = register(aws.sagemaker, aws.s3, onnx_pilot_package("good"), key="m/0/model.tar.gz")
    for number in range(1, agent_mod.MAX_TRIES_PER_CHECK + 1):
        register(aws.sagemaker, aws.s3, folder_then_file(), key=f"m/{number}/model.tar.gz")
    assert pull(tmp_path) == 1
    assert "the next check goes on" in capsys.readouterr().out
    assert len(state(tmp_path)["rejected"]) == agent_mod.MAX_TRIES_PER_CHECK
    assert pull(tmp_path) == 0
    assert current_arn(tmp_path) == good


class CountingS3:
    """The local S3 client, counting downloads."""

    def __init__(self, s3) -> None:
        self.s3 = s3
        self.downloads: list[str] = []

    def get_object(self, **kwargs):
        self.downloads.append(kwargs["Key"])
        return self.s3.get_object(**kwargs)


def agent_for(tmp_path: Path, aws, s3=None, **kwargs) -> agent_mod.Agent:
    return agent_mod.Agent(
        tmp_path / "car", group=GROUP, target=TARGET, sagemaker=aws.sagemaker, s3=s3 or aws.s3, **kwargs
    )


def test_a_rejected_package_is_never_downloaded_again(car_workspace):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    register(aws.sagemaker, aws.s3, truncated(onnx_pilot_package("cut")), key="m/2/model.tar.gz")
    s3 = CountingS3(aws.s3)
    car = agent_for(tmp_path, aws, s3)
    first = car.check()
    assert first.outcome == "installed" and len(first.rejected) == 1
    assert [car.check().outcome for _ in range(3)] == ["up-to-date"] * 3
    assert s3.downloads == ["m/2/model.tar.gz", "m/1/model.tar.gz"]


def test_a_sha_mismatch_is_retried_not_rejected_and_installs_once_repaired(car_workspace, capsys):
    tmp_path, aws = car_workspace
    good = register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    genuine = onnx_pilot_package("v2")
    newer = register(aws.sagemaker, aws.s3, genuine, key="m/2/model.tar.gz")
    aws.s3.put_object(Bucket=BUCKET, Key="m/2/model.tar.gz", Body=genuine[:-1])  # damaged in transit/storage
    assert pull(tmp_path) == 0, "a new car falls back to the older good package"
    assert current_arn(tmp_path) == good and state(tmp_path)["rejected"] == {}
    assert "SHA-256 mismatch" in capsys.readouterr().out
    assert pull(tmp_path) == 1, "the newer one is tried again at every check"
    assert "tried again" in capsys.readouterr().out
    aws.s3.put_object(Bucket=BUCKET, Key="m/2/model.tar.gz", Body=genuine)  # repaired
    assert pull(tmp_path) == 0
    assert current_arn(tmp_path) == newer


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_retried_not_a_rejection(car_workspace, monkeypatch, capsys):
    tmp_path, aws = car_workspace
    good = register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    newer = register(aws.sagemaker, aws.s3, onnx_pilot_package("v2"), key="m/2/model.tar.gz")
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr(artifacts, "_copy_hashing", full_disk)  # the download and the unpack both write
        assert pull(tmp_path) == 1
        out = assert_storage_error(capsys)
        assert "No space left" in out and f"keeping {good}" in out
    assert current_arn(tmp_path) == good and state(tmp_path)["rejected"] == {}
    assert not list((tmp_path / "car" / "downloads").iterdir())
    with monkeypatch.context() as patch:  # room to download, none to unpack
        patch.setattr(artifacts, "safe_extract", full_disk)
        assert pull(tmp_path) == 1
        assert_storage_error(capsys)
    assert state(tmp_path)["rejected"] == {}
    assert pull(tmp_path) == 0
    assert current_arn(tmp_path) == newer


def assert_storage_error(capsys) -> str:
    out, err = capsys.readouterr()
    assert out.startswith("storage-error: ") and "Traceback" not in out + err
    return out


def test_a_read_only_disk_neither_stops_pull_nor_run(car_workspace, monkeypatch, capsys):
    from edge import atomic_files

    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v2"), key="m/2/model.tar.gz")
    capsys.readouterr()

    def read_only(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(atomic_files, "file_lock", read_only)
    assert pull(tmp_path) == 1
    assert "cannot lock" in assert_storage_error(capsys)
    code = run_car(tmp_path, "--max-frames", "2")
    out = capsys.readouterr().out
    assert code == 0 and "drove 2 frames" in out
    assert "update check: storage-error: cannot lock" in out


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.EROFS, "Read-only file system"),
        ZeroDivisionError("a bug"),
        agent_mod.AgentError("bad state"),
    ],
)
def test_run_drives_with_the_last_good_model_whatever_the_update_check_raises(
    car_workspace, monkeypatch, capsys, failure
):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    capsys.readouterr()

    def raising(self):
        raise failure

    monkeypatch.setattr(agent_mod.Agent, "check", raising)
    summary = tmp_path / "summary.json"
    code = run_car(tmp_path, "--max-frames", "3", "--summary-json", str(summary))
    out, err = capsys.readouterr()
    assert code == 0 and "drove 3 frames" in out and "Traceback" not in err
    update = json.loads(summary.read_text())["update"]
    assert update == {"outcome": "check-failed", "detail": f"{type(failure).__name__}: {failure}"}
    assert f"update check: check-failed: {type(failure).__name__}" in out
    assert state(tmp_path)["last_check"]["outcome"] == "check-failed", "status says why too"
    assert edge_main(["status", "--root", str(tmp_path / "car")]) == 0
    assert f"check-failed: {type(failure).__name__}: {failure}" in capsys.readouterr().out


def test_run_with_a_hostile_package_approved_still_drives(car_workspace, capsys):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    assert pull(tmp_path) == 0
    bad = register(aws.sagemaker, aws.s3, zip_of({"manifest.json": b"{}"}, flag=1), key="m/2/model.tar.gz")
    code = run_car(tmp_path, "--max-frames", "2")
    out = capsys.readouterr().out
    assert code == 0 and "drove 2 frames" in out and f"update check: refused: {bad}" in out
    assert [key.split("#")[0] for key in state(tmp_path)["rejected"]] == [bad]


def test_a_hostile_archive_delivered_by_greengrass_is_rejected_once(tmp_path, capsys):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(gnu_longname_bomb())
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/robocar-pilots/5"
    flags = ["pull", "--root", str(tmp_path / "car"), "--archive", str(archive), "--model-package-arn", arn]
    flags += ["--sha256", sha256(archive.read_bytes())]
    assert edge_main(flags) == 1
    assert "extension header declares" in assert_refused_in_one_line(capsys)
    assert list(state(tmp_path)["rejected"]) == [f"{arn}#{sha256(archive.read_bytes())}"]
    assert edge_main(flags) == 1
    assert "was rejected before" in capsys.readouterr().out
    assert edge_main([*flags[:3], "--archive", str(tmp_path / "absent.tar.gz"), *flags[5:]]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_an_unexpected_exception_rejects_the_package_with_its_type_logged(car_workspace, caplog):
    tmp_path, aws = car_workspace
    arn = register(aws.sagemaker, aws.s3, fake_model("v1"), key="m/1/model.tar.gz")

    def buggy_smoke(model_dir: Path) -> dict:
        return {"angle": 1 / 0}

    caplog.set_level(logging.DEBUG, logger="robocar.edge.agent")
    result = agent_for(tmp_path, aws, smoke=buggy_smoke).check()
    assert result.outcome == "refused" and result.rejected == [arn]
    assert "smoke test: unexpected ZeroDivisionError: division by zero" in result.detail
    warning = [r for r in caplog.records if r.levelno == logging.WARNING and "unexpected" in r.getMessage()]
    assert warning and "ZeroDivisionError" in warning[0].getMessage()
    assert any(r.exc_info and r.levelno == logging.DEBUG for r in caplog.records), "the traceback, at debug"


# ---- bounded memory --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "archive",
    [
        gnu_longname_bomb(),
        gnu_longname_bomb(tarfile.GNUTYPE_LONGLINK),
        gnu_longname_bomb(tarfile.XHDTYPE),
        gnu_longname_bomb(tarfile.XGLTYPE),
        gzip.compress(gnu_longname_bomb()),
    ],
    ids=["gnu-longname", "gnu-longlink", "pax", "pax-global", "gzip"],
)
def test_a_huge_extension_header_is_refused_in_bounded_memory(tmp_path, archive):
    path = tmp_path / "bomb.tar"
    path.write_bytes(archive)
    assert len(archive) < 420_000
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeArchiveError, match="extension header declares 3221225472 bytes"):
            safe_extract(path, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB, f"{peak / MIB:.1f} MiB allocated (tarfile alone would allocate 3 GiB)"


def pax_header(records: bytes) -> bytes:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(records)
    return info.tobuf(format=tarfile.USTAR_FORMAT) + records + b"\0" * (-len(records) % 512)


def test_extension_headers_in_a_row_are_bounded(tmp_path):
    # Each small pax header is allowed; a chain of them before one member is not (tarfile recurses).
    path = tmp_path / "chain.tar"
    path.write_bytes(pax_header(b"13 comment=c\n") * 50 + tar_bytes_plain({"manifest.json": b"{}"}))
    with pytest.raises(UnsafeArchiveError, match="extension headers in a row"):
        safe_extract(path, tmp_path / "out")


def tar_bytes_plain(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_zip_directory_larger_than_the_member_limit_allows_is_refused_before_parsing(tmp_path):
    members = {f"m{i:05d}": b"" for i in range(20_000)}  # a 1.2 MB directory of 20,000 entries
    data = bytearray(zip_of(members))
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = (1).to_bytes(2, "little") * 2  # the end record lies: "one entry"
    path = tmp_path / "many.zip"
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with pytest.raises(UnsafeArchiveError, match="more than 256 members can take"):
            safe_extract(path, tmp_path / "out")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB, f"{peak / MIB:.1f} MiB: the directory was parsed"


@pytest.mark.parametrize(
    ("limits", "members", "message"),
    [
        (ExtractLimits(max_name_bytes=64), {"d/" * 40 + "f": b"x"}, "over the 64-byte limit"),
        (ExtractLimits(max_members=3), {f"f{i}": b"x" for i in range(4)}, "more than 3 members"),
        (ExtractLimits(max_file_bytes=10), {"f": b"x" * 11}, "over the 10-byte limit"),
        (ExtractLimits(max_total_bytes=15), {"f": b"x" * 10, "g": b"y" * 10}, "more than 15 bytes"),
    ],
)
def test_every_limit_is_a_clear_refusal_for_tar_and_zip(tmp_path, limits, members, message):
    for name, data in (("a.tar.gz", tar_bytes(members)), ("a.zip", zip_of(members))):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UnsafeArchiveError, match=message):
            safe_extract(path, tmp_path / f"out-{name}", limits)


# ---- what reaches the wheels -----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [onnx_pilot_package, litert_pilot_package], ids=["onnxruntime", "litert"])
@pytest.mark.parametrize("model_type", ["linear", "categorical"])
def test_real_runtimes_expose_raw_heads(tmp_path, make, model_type):
    archive = tmp_path / "pilot.tar.gz"
    archive.write_bytes(
        make("heads", model_type=model_type, **({"throttle": 50.0} if model_type == "linear" else {}))
    )
    safe_extract(archive, tmp_path / "pilot")
    pilot = drive.open_pilot(tmp_path / "pilot")
    image = next(iter(sources.TubSource(TUB_V2))).image
    heads = pilot.heads(image)
    angle, throttle = pilot(image)
    if model_type == "linear":
        assert [h.shape for h in heads] == [(1, 1), (1, 1)]
        assert heads[1][0, 0] == pytest.approx(50.0) and throttle == 1.0, "the decoder's clip hides it"
    else:
        assert [h.shape for h in heads] == [(1, 15), (1, 20)]
        assert [float(h.sum()) for h in heads] == pytest.approx([1.0, 1.0], abs=1e-5)
    refused = pytest.raises(agent_mod.SmokeTestError, match="far outside")
    with refused if model_type == "linear" else contextlib.nullcontext():
        agent_mod.smoke_test(tmp_path / "pilot")


def dark_and_bright_frames(tmp_path: Path) -> Path:
    """A folder source: camera frames with black ones among them (a tunnel, a covered lens)."""
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    camera = sorted((TUB_V2 / "images").glob("*.jpg"))[:4]
    for number, path in enumerate(camera):
        (folder / f"{2 * number}.jpg").write_bytes(path.read_bytes())
        Image.new("RGB", (160, 120)).save(folder / f"{2 * number + 1}.jpg")
    return folder


def test_nan_never_reaches_the_wheels_the_json_lines_or_mqtt(tmp_path):
    archive = tmp_path / "dark.tar.gz"
    archive.write_bytes(onnx_pilot_package("dark", nan_when_dark=True))
    safe_extract(archive, tmp_path / "dark")
    pulses: list[tuple[int, int]] = []
    pwm = drive.PCA9685Actuator(lambda channel, pulse: pulses.append((channel, pulse)))
    published: list[drive.Command] = []

    class Bus:  # stands in for MQTT: no neutral(), gets commands only
        def apply(self, command):
            published.append(command)

        def close(self):
            pass

    jsonl = drive.JsonLinesWriter(str(tmp_path / "drive.jsonl"))
    source = sources.open_source(
        f"folder:{dark_and_bright_frames(tmp_path)}", drive.open_pilot(tmp_path / "dark").spec
    )
    summary = drive.drive(source, drive.LivePilot(tmp_path / "dark", drive.open_pilot), [pwm, jsonl, Bus()])
    jsonl.close()
    assert (summary.frames, summary.skipped, summary.non_finite) == (4, 4, 4)
    assert "4 skipped (4 non-finite, 0 inference errors)" in summary.text()

    def refuse_constant(name):
        raise AssertionError(f"{name} in the JSON lines")

    lines = [
        json.loads(line, parse_constant=refuse_constant)
        for line in (tmp_path / "drive.jsonl").read_text().splitlines()
    ]
    assert len(lines) == 4 and len(published) == 4
    assert all(np.isfinite([c.angle, c.throttle]).all() for c in published)
    neutral = [(0, 370), (1, 375)]  # motor stopped first, then steering centred
    after_first_dark = pulses[2:4]
    assert after_first_dark == neutral, "a skipped frame puts the car in neutral"


def test_the_pwm_actuator_stops_on_non_finite_and_clamps(tmp_path):
    pwm = drive.PCA9685Actuator()
    command = drive.Command(0, "f", float("nan"), 0.5, 1.0, "m", 0.0)
    pwm.apply(command)  # raised ValueError (int(round(nan))) before: the drive ended
    assert pwm.pulses == {1: 375, 0: 370}
    pwm.apply(drive.Command(1, "f", -7.0, float("inf"), 1.0, "m", 0.0))
    assert pwm.pulses == {1: 375, 0: 370}
    pwm.apply(drive.Command(2, "f", -7.0, 3.0, 1.0, "m", 0.0))
    assert pwm.pulses == {1: 460, 0: 500}, "clamped to full left and full throttle, not beyond"


def test_an_inference_error_skips_the_frame_and_the_drive_goes_on(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(onnx_pilot_package("ok"))
    safe_extract(archive, tmp_path / "ok")
    pilot = drive.LivePilot(tmp_path / "ok", drive.open_pilot)
    real, calls = pilot.infer, []

    class Flaky:
        spec, description = real.spec, real.description

        def __call__(self, image):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("runtime hiccup")
            return real(image)

    pilot.infer = Flaky()
    summary = drive.drive(sources.TubSource(TUB_V2), pilot, [], max_frames=3)
    assert (summary.frames, summary.skipped, summary.failed) == (3, 1, 1)


# ---- the manifest cannot point outside what was verified -------------------------------------------------
def test_run_refuses_a_model_folder_whose_file_links_outside(tmp_path, capsys):
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(onnx_pilot_package("ok"))
    safe_extract(archive, tmp_path / "model")
    outside = tmp_path / "elsewhere.onnx"
    (tmp_path / "model" / "pilot.onnx").rename(outside)
    (tmp_path / "model" / "pilot.onnx").symlink_to(outside)
    code = edge_main(
        ["run", "--model", str(tmp_path / "model"), "--source", str(TUB_V2), "--max-frames", "1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "resolves outside the package" in err and "Traceback" not in err
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    manifest["artifacts"][0]["file"] = str(outside)
    (tmp_path / "model" / "manifest.json").write_text(json.dumps(manifest))
    assert edge_main(["run", "--model", str(tmp_path / "model"), "--source", str(TUB_V2)]) == 2
    assert "points outside the package" in capsys.readouterr().err


# ---- one line, exit 2, for bad input; tracebacks only with --debug ----------------------------------------
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "is not a JSON object"),
        ('{"rejected": []}', "has a 'rejected' of the wrong type"),
        ("[" * 100_000, "is not valid JSON"),
    ],
    ids=["not-json", "a-list", "wrong-field-type", "nested-too-deep"],
)
@pytest.mark.parametrize("command", ["status", "rollback", "pull"])
def test_a_corrupt_state_file_is_one_line_and_exit_2(tmp_path, capsys, content, message, command):
    (tmp_path / "car").mkdir()
    (tmp_path / "car" / "state.json").write_text(content)
    extra = ["--local-root", str(tmp_path / "workspace")] if command == "pull" else []
    assert edge_main([command, "--root", str(tmp_path / "car"), *extra]) == 2
    out, err = capsys.readouterr()
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert edge_main([command, "--root", str(tmp_path / "car"), *extra, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_an_unreadable_state_path_is_one_line(tmp_path, capsys):
    (tmp_path / "car" / "state.json").mkdir(parents=True)  # a folder where the file should be
    assert edge_main(["status", "--root", str(tmp_path / "car")]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "Traceback" not in err


def test_a_bug_is_one_line_with_its_type_and_exit_70(car_workspace, monkeypatch, capsys):
    tmp_path, _ = car_workspace

    def buggy(self):
        return {}["missing"]

    monkeypatch.setattr(agent_mod.Agent, "check", buggy)
    assert pull(tmp_path) == 70
    err = capsys.readouterr().err
    assert err.strip() == "robocar edge: unexpected KeyError: 'missing' (--debug shows the traceback)"
    assert pull(tmp_path, "--debug") == 70
    assert "Traceback" in capsys.readouterr().err


def test_status_lists_rejected_packages_with_their_reasons(car_workspace, capsys):
    tmp_path, aws = car_workspace
    register(aws.sagemaker, aws.s3, onnx_pilot_package("v1"), key="m/1/model.tar.gz")
    bad = register(aws.sagemaker, aws.s3, onnx_pilot_package("t50", throttle=50.0), key="m/2/model.tar.gz")
    pull(tmp_path)
    capsys.readouterr()
    assert edge_main(["status", "--root", str(tmp_path / "car")]) == 0
    out = capsys.readouterr().out
    assert (
        "rejected  1 package(s)" in out
        and f"  {bad}: smoke test: raw throttle output 50 is far outside" in out
    )
