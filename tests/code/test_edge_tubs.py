"""One tub reader (edge/tubs.py): the car's tub source and Preprocess read the same format the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from edge_fixtures import SAMPLE_TUBS

from edge import sources, tubs
from processing.tubs import SourceError, discover_sources, read_v2_manifest


def copy_tub(tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(SAMPLE_TUBS / name, tmp_path / name))


def edit_catalog_line(tub: Path, **changes: object) -> None:
    lines = (tub / "manifest.json").read_text().splitlines()
    lines[4] = json.dumps({**json.loads(lines[4]), **changes})
    (tub / "manifest.json").write_text("\n".join(lines) + "\n")


def test_the_car_refuses_a_manifest_preprocess_refuses_with_the_same_reason(tmp_path: Path) -> None:
    tub = copy_tub(tmp_path, "tub_v2")
    edit_catalog_line(tub, paths=["../../../etc/passwd"])
    with pytest.raises(SourceError, match="paths must list catalog file names") as preprocess:
        read_v2_manifest(tub)
    with pytest.raises(sources.SourceError, match="paths must list catalog file names") as car:
        sources.TubSource(tub)
    assert str(preprocess.value).split(": ", 1)[1] == str(car.value).split(": ", 1)[1]


def test_the_car_and_preprocess_agree_on_what_is_a_tub(tmp_path: Path) -> None:
    v1 = copy_tub(tmp_path / "tubs", "tub_v1")
    v2 = copy_tub(tmp_path / "tubs", "tub_v2")
    not_a_tub = tmp_path / "tubs" / "meta_only"
    not_a_tub.mkdir()
    (not_a_tub / "meta.json").write_text("{}")  # a v1 tub needs record_<N>.json files too
    found = {source.path.name: source.format for source in discover_sources(tmp_path / "tubs")}
    assert found == {"tub_v1": "v1", "tub_v2": "v2"}
    assert sources.TubSource(v1).version == 1 and sources.TubSource(v2).version == 2
    with pytest.raises(sources.SourceError, match="not a donkeycar tub"):
        sources.TubSource(not_a_tub)


def test_v1_replay_skips_excluded_records_and_keeps_file_order(tmp_path: Path) -> None:
    tub = copy_tub(tmp_path, "tub_v1")
    indexes = [index for index, _ in tubs.v1_record_files(tub)]
    (tub / "exclude.json").write_text(json.dumps(indexes[:2]))
    replayed = list(sources.TubSource(tub))
    assert len(replayed) == len(indexes) - 2
    assert [frame.index for frame in replayed] == list(range(len(indexes) - 2))


def test_a_garbage_catalog_line_is_skipped_by_the_car_not_fatal(tmp_path: Path) -> None:
    tub = copy_tub(tmp_path, "tub_v2")
    catalog = tub / json.loads((tub / "manifest.json").read_text().splitlines()[4])["paths"][0]
    lines = catalog.read_text().splitlines()
    catalog.write_text("\n".join(["{not json", *lines]) + "\n")
    before = len(list(sources.TubSource(copy_tub(tmp_path / "clean", "tub_v2"))))
    assert len(list(sources.TubSource(tub))) == before
