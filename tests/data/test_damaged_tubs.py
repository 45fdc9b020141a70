"""Each kind of damage rejects exactly the damaged record, reported by index with its reason."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from processing.preprocess import main

SAMPLES = Path(__file__).resolve().parent / "samples" / "tubs"


@pytest.fixture
def tub_v2(tmp_path: Path) -> Path:
    tub = tmp_path / "in" / "nested" / "tub_v2"
    shutil.copytree(SAMPLES / "tub_v2", tub)
    for path in tub.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return tub


def catalog_lines(tub: Path, number: int) -> list[str]:
    return (tub / f"catalog_{number}.catalog").read_text().splitlines(keepends=True)


def replace_line(tub: Path, index: int, text: str) -> None:
    """Replace the catalog line of record ``index`` (20 per catalog in the sample) by ``text``."""
    lines = catalog_lines(tub, index // 20)
    lines[index % 20] = text + "\n"
    (tub / f"catalog_{index // 20}.catalog").write_text("".join(lines))


def edit_record(tub: Path, index: int, field: str, raw_value: str | None) -> None:
    """Set ``field`` of record ``index`` to the JSON text ``raw_value`` (None removes the field)."""
    line = catalog_lines(tub, index // 20)[index % 20].rstrip("\n")
    pattern = re.compile(rf'"{re.escape(field)}": [^,}}]*(, )?')
    assert pattern.search(line), line
    replace_line(tub, index, pattern.sub("" if raw_value is None else rf'"{field}": {raw_value}\1', line))


def run(tub_root: Path, out: Path, *extra: str) -> tuple[int, dict]:
    code = main(["--input", str(tub_root), "--output", str(out), "--workers", "1", *extra])
    return code, json.loads((out / "report" / "data_report.json").read_text())


def only_tub(report: dict) -> dict:
    (tub,) = report["tubs"]
    assert tub["read"] == tub["accepted"] + tub["rejected"] + tub["deleted"]
    return tub


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_every_damage_rejects_only_its_record(tub_v2, tmp_path):
    replace_line(tub_v2, 1, '{"_index": 1, "_session_id": "26-11-21_0", "cam/image_ar')  # truncated
    replace_line(tub_v2, 2, "")  # an emptied line
    edit_record(tub_v2, 3, "user/angle", "NaN")
    edit_record(tub_v2, 4, "user/throttle", "1e999")
    edit_record(tub_v2, 8, "user/angle", "1.5")
    edit_record(tub_v2, 9, "user/angle", None)  # a required field missing
    edit_record(tub_v2, 10, "user/angle", '"left"')
    (tub_v2 / "images" / "21_cam_image_array_.jpg").unlink()
    (tub_v2 / "images" / "22_cam_image_array_.jpg").write_bytes(b"not a jpeg at all")
    (tub_v2 / "images" / "23_cam_image_array_.jpg").write_bytes(jpeg(80, 60))
    half = (tub_v2 / "images" / "24_cam_image_array_.jpg").read_bytes()
    (tub_v2 / "images" / "24_cam_image_array_.jpg").write_bytes(half[: len(half) // 2])  # cut short
    replace_line(tub_v2, 5, "garbage on a deleted index")  # deleted wins: never parsed, never rejected

    code, report = run(tub_v2.parent.parent, tmp_path / "out", "--max-reject-fraction", "0.5")
    assert code == 0
    tub = only_tub(report)
    assert tub["tub"] == "nested/tub_v2" and tub["format"] == "v2"
    assert (tub["read"], tub["accepted"], tub["rejected"], tub["deleted"]) == (50, 37, 11, 2)
    reasons = {r["index"]: r["reason"].split(":", 1)[0] for r in tub["rejections"]}
    assert reasons == {
        1: "malformed record",
        2: "malformed record",
        3: "non-finite value",
        4: "non-finite value",
        8: "out of range",
        9: "schema",
        10: "schema",
        21: "image missing",
        22: "image unreadable",
        23: "image wrong size",
        24: "image unreadable",
    }
    wrong_size = next(r["reason"] for r in tub["rejections"] if r["index"] == 23)
    assert "80x60" in wrong_size and "160x120" in wrong_size


def test_a_lost_line_is_reported_missing_and_the_others_keep_their_index(tub_v2, tmp_path):
    lines = catalog_lines(tub_v2, 0)
    del lines[12]  # record 12 lost entirely (manifest.json still counts 50 records)
    lines[15] = "garbage\n"  # was record 16: its index is the previous line's (15) + 1
    (tub_v2 / "catalog_0.catalog").write_text("".join(lines))
    code, report = run(tub_v2, tmp_path / "out")
    tub = only_tub(report)
    assert code == 0 and (tub["read"], tub["accepted"], tub["rejected"], tub["deleted"]) == (50, 46, 2, 2)
    assert [(r["index"], r["reason"].split(":")[0]) for r in tub["rejections"]] == [
        (12, "record missing"),
        (16, "malformed record"),
    ]
    assert any("19 lines" in w for w in tub["warnings"])


def test_a_missing_catalog_reports_each_of_its_records(tub_v2, tmp_path):
    (tub_v2 / "catalog_2.catalog").unlink()  # records 40..49
    code, report = run(tub_v2, tmp_path / "out", "--max-reject-fraction", "0.5")
    tub = only_tub(report)
    assert (tub["read"], tub["accepted"], tub["rejected"], tub["deleted"]) == (50, 38, 10, 2)
    assert [r["index"] for r in tub["rejections"]] == list(range(40, 50))
    assert any("catalog_2.catalog" in w for w in tub["warnings"])


def test_duplicate_index_is_rejected(tub_v2, tmp_path):
    line = catalog_lines(tub_v2, 0)[7]
    replace_line(tub_v2, 8, line.rstrip("\n"))  # record 8 overwritten by a copy of record 7
    code, report = run(tub_v2, tmp_path / "out")
    tub = only_tub(report)
    assert [(r["index"], r["reason"].split(":")[0]) for r in tub["rejections"]] == [
        (7, "duplicate index"),
        (8, "record missing"),
    ]


def test_v1_damage_and_exclude(tmp_path):
    tub = tmp_path / "in" / "tub_v1"
    shutil.copytree(SAMPLES / "tub_v1", tub)
    for path in tub.rglob("*"):
        path.chmod(0o644)
    (tub / "record_7.json").write_text('{"cam/image_array": "7_cam-image_array_.jpg", "user/angle": ')
    (tub / "8_cam-image_array_.jpg").unlink()
    code, report = run(tub.parent, tmp_path / "out")
    result = only_tub(report)
    assert code == 0 and (result["read"], result["accepted"], result["rejected"], result["deleted"]) == (
        20,
        17,
        2,
        1,
    )
    assert [(r["index"], r["reason"].split(":")[0]) for r in result["rejections"]] == [
        (7, "malformed record"),
        (8, "image missing"),
    ]


def test_too_many_rejections_fail_the_step_with_the_report_written(tub_v2, tmp_path, capsys):
    for index in range(20, 40):
        (tub_v2 / "images" / f"{index}_cam_image_array_.jpg").unlink()
    code, report = run(tub_v2, tmp_path / "out", "--max-reject-fraction", "0.3")
    assert code == 1 and report["status"] == "failed"
    assert "records rejected" in capsys.readouterr().err
    assert only_tub(report)["rejected"] == 20


def test_nothing_accepted_fails(tub_v2, tmp_path, capsys):
    for image in (tub_v2 / "images").iterdir():
        image.unlink()
    code, report = run(tub_v2, tmp_path / "out", "--max-reject-fraction", "1")
    assert code == 1 and "no record was accepted" in capsys.readouterr().err


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2
    assert "no tub" in capsys.readouterr().err


def test_unreadable_manifest_names_the_tub(tub_v2, tmp_path, capsys):
    (tub_v2 / "manifest.json").write_text('["cam/image_array"]\n')
    assert main(["--input", str(tub_v2), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "tub_v2" in err and "5 JSON lines" in err
