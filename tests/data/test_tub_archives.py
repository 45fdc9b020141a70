"""Tubs uploaded as archives (the "new data" rule starts a run for them) are read like tub folders."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from processing.preprocess import main

SAMPLES = Path(__file__).resolve().parent / "samples" / "tubs"


def tar_tub(tub: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tub, arcname=tub.name)


def zip_tub(tub: Path, archive: Path) -> None:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(tub.rglob("*")):
            if path.is_file():
                bundle.write(path, f"{tub.name}/{path.relative_to(tub).as_posix()}")


def report_of(output: Path) -> dict:
    return json.loads((output / "report" / "data_report.json").read_text())


def test_tubs_in_tar_gz_and_zip_are_accounted_like_folders(tmp_path: Path) -> None:
    inbox = tmp_path / "raw"
    (inbox / "day1").mkdir(parents=True)
    tar_tub(SAMPLES / "tub_v2", inbox / "day1" / "tub_v2.tar.gz")
    zip_tub(SAMPLES / "tub_v1", inbox / "tub_v1.zip")
    assert main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--workers", "1"]) == 0
    tubs = {t["tub"]: t for t in report_of(tmp_path / "out")["tubs"]}
    assert set(tubs) == {"day1/tub_v2.tar.gz/tub_v2", "tub_v1.zip/tub_v1"}
    v2, v1 = tubs["day1/tub_v2.tar.gz/tub_v2"], tubs["tub_v1.zip/tub_v1"]
    assert (v2["format"], v2["read"], v2["accepted"], v2["deleted"], v2["rejected"]) == ("v2", 50, 48, 2, 0)
    assert (v1["format"], v1["read"], v1["accepted"], v1["deleted"], v1["rejected"]) == ("v1", 20, 19, 1, 0)


def test_archive_and_folder_together(tmp_path: Path) -> None:
    inbox = tmp_path / "raw"
    inbox.mkdir()
    tar_tub(SAMPLES / "tub_v2", inbox / "upload.tgz")
    shutil.copytree(SAMPLES / "tub_v1", inbox / "tub_v1")
    assert main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--workers", "1"]) == 0
    total = report_of(tmp_path / "out")["total"]
    assert (total["read"], total["accepted"], total["deleted"]) == (70, 67, 3)


@pytest.mark.parametrize("kind", ["zip-traversal", "tar-symlink"])
def test_an_unsafe_archive_stops_the_step_and_names_itself(tmp_path: Path, kind: str, capsys) -> None:
    inbox = tmp_path / "raw"
    inbox.mkdir()
    if kind == "zip-traversal":
        with zipfile.ZipFile(inbox / "evil.zip", "w") as bundle:
            bundle.writestr("tub/manifest.json", "{}")
            bundle.writestr("../../escaped.txt", "x")
    else:
        with tarfile.open(inbox / "evil.tar.gz", "w:gz") as tar:
            link = tarfile.TarInfo("tub/manifest.json")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(link)
            data = b"{}"
            info = tarfile.TarInfo("tub/meta.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    code = main(["--input", str(inbox), "--output", str(tmp_path / "out"), "--workers", "1"])
    assert code == 2
    assert "evil." in capsys.readouterr().err
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    assert not (tmp_path / "out" / "train").exists()
