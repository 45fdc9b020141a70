"""processing/preprocess.py as a command: output independent of --workers, crop options, --help, and how
the container scripts end (processing/errors.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from edge.frames import FrameSpec, decode_image, prepare_frame
from pipelines.synth import write_tub
from processing.preprocess import main
from processing.shards import load_split

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth_tub(tmp_path_factory) -> Path:
    tub = tmp_path_factory.mktemp("synth") / "tub"
    write_tub(tub, frames=300, sessions=3, seed=5)
    return tub


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("shard_size", ["2048", "64"])
def test_output_is_byte_identical_whatever_the_worker_count(synth_tub, tmp_path, shard_size):
    tub = tmp_path / "tub"
    shutil.copytree(synth_tub, tub)
    (tub / "images" / "70_cam_image_array_.jpg").unlink()  # a rejection inside a shard
    outputs = {}
    for workers in ("1", "2", "3"):
        out = tmp_path / f"workers-{workers}"
        args = ["--input", str(tub), "--output", str(out), "--workers", workers, "--shard-size", shard_size]
        assert main(args) == 0
        outputs[workers] = tree_bytes(out)
    assert outputs["1"] == outputs["2"] == outputs["3"]
    report = json.loads(outputs["1"]["report/data_report.json"])
    assert report["total"]["accepted"] == 299 and report["total"]["rejected"] == 1
    assert not any(".part-" in name for name in outputs["1"])


def test_crop_and_resize_use_the_frame_contract(synth_tub, tmp_path):
    args = ["--crop-top", "40", "--height", "66", "--width", "200", "--shard-size", "64", "--seed", "9"]
    assert main(["--input", str(synth_tub), "--output", str(tmp_path), "--workers", "1", *args]) == 0
    arrays, dataset = load_split(tmp_path / "train")
    spec = FrameSpec(crop_top=40, height=66, width=200)
    assert dataset["frame_spec"] == spec.to_dict() and arrays["images"].shape[1:] == (66, 200, 3)
    assert len(dataset["shards"]) == -(-dataset["frames"] // 64)
    first = int(arrays["index"][0])
    raw = (synth_tub / "images" / f"{first}_cam_image_array_.jpg").read_bytes()
    np.testing.assert_array_equal(arrays["images"][0], prepare_frame(decode_image(raw), spec))
    catalog = [json.loads(line) for line in (synth_tub / "catalog_0.catalog").read_text().splitlines()]
    assert arrays["angle"][0] == np.float32(catalog[first]["user/angle"])


def test_the_seed_changes_the_split_but_not_the_accounting(synth_tub, tmp_path):
    reports = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        assert main(["--input", str(synth_tub), "--output", str(out), "--workers", "1", "--seed", seed]) == 0
        reports.append(json.loads((out / "report" / "data_report.json").read_text()))
    assert reports[0]["tubs"] == reports[1]["tubs"]
    assert reports[0]["splits"]["test"]["fingerprint"] != reports[1]["splits"]["test"]["fingerprint"]


def test_runs_as_a_container_script_with_help():
    result = subprocess.run(
        [sys.executable, str(REPO / "processing" / "preprocess.py"), "--help"],
        capture_output=True, text=True, cwd="/", check=False,
    )  # fmt: skip
    assert result.returncode == 0
    assert "/opt/ml/processing/input/data" in result.stdout and "--max-reject-fraction" in result.stdout


def test_bad_options_are_reported_without_traceback(synth_tub, tmp_path, capsys):
    assert main(["--input", str(synth_tub), "--output", str(tmp_path), "--crop-top", "200"]) == 2
    assert "bad frame options" in capsys.readouterr().err
    assert main(["--input", str(synth_tub), "--output", str(tmp_path), "--train-fraction", "0.9"]) == 2
    assert "add up" in capsys.readouterr().err


def test_shard_size_defaults_to_enough_shards_for_a_pool_within_the_contract(synth_tub, tmp_path, capsys):
    from processing.preprocess import auto_shard_size

    assert [auto_shard_size(n) for n in (10, 5000, 10_000, 1_000_000)] == [256, 313, 625, 2048]
    assert main(["--input", str(synth_tub), "--output", str(tmp_path), "--shard-size", "4096"]) == 2
    assert "contract's limit" in capsys.readouterr().err


def test_pool_forks_unless_a_threaded_framework_is_loaded(monkeypatch):
    import types

    from processing.preprocess import pool_context

    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delitem(sys.modules, "jax", raising=False)
    assert pool_context().get_start_method() == "fork"
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    assert pool_context().get_start_method() == "forkserver"


def test_a_bug_is_one_line_with_exit_70_and_debug_prints_the_traceback(
    synth_tub, tmp_path, capsys, monkeypatch
):
    import processing.preprocess as preprocess

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(preprocess, "split_frames", broken)
    args = ["--input", str(synth_tub), "--output", str(tmp_path), "--workers", "1"]
    assert main(args) == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "preprocess: internal error (a bug, not your input): KeyError: 'a bug'; --debug" in err
    assert main([*args, "--debug"]) == 70
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_run_main_words_every_exception_in_one_line(capsys):
    from processing.errors import UserError, run_main

    def raising(exc: BaseException):
        def body() -> int:
            raise exc

        return body

    assert run_main("p", raising(UserError("bad\ninput " + "x" * 10_000))) == 2
    err = capsys.readouterr().err
    assert err.startswith("p: error: bad input xxx") and err.count("\n") == 1 and len(err) < 2100
    assert run_main("p", raising(PermissionError(13, "Permission denied", "/out"))) == 2
    assert capsys.readouterr().err == "p: error: [Errno 13] Permission denied: '/out'\n"
    assert run_main("p", lambda: 0) == 0


def test_every_limit_has_a_flag_and_refusals_name_it(tmp_path):
    import dataclasses

    from processing.limits import FLAGS, DataLimits, limit_text
    from processing.preprocess import build_parser

    assert set(FLAGS) == {field.name for field in dataclasses.fields(DataLimits)}
    text = build_parser().format_help()
    assert all(flag in text for flag in FLAGS.values())
    assert limit_text(DataLimits(), "line_bytes") == "the limit of 1,048,576 bytes (--max-line-bytes)"


def test_the_container_scripts_share_the_debug_flag():
    from processing.evaluate import build_parser as evaluate_parser
    from training.train import parse_args

    assert evaluate_parser().parse_args(["--debug"]).debug
    assert parse_args(["--debug"], environ={}).debug and not parse_args([], environ={}).debug
    assert not parse_args([], environ={"SM_HPS": '{"debug": true}'}).debug  # not a hyperparameter


@pytest.mark.parametrize(
    "error",
    [
        EOFError("Compressed file ended before the end-of-stream marker was reached"),
        zlib.error("Error -3 while decompressing data: invalid code lengths set"),
        RuntimeError("File model.json is encrypted, password required for extraction"),
        FileExistsError(17, "File exists", "model/x"),
    ],
)
def test_evaluate_refuses_a_damaged_model_archive_as_bad_input(tmp_path, monkeypatch, error):
    import edge.artifacts
    from processing.errors import UserError
    from processing.evaluate import EvaluationError, extract_model

    def damaged(*args, **kwargs):
        raise error

    monkeypatch.setattr(edge.artifacts, "safe_extract", damaged)  # what a damaged archive raises there
    (tmp_path / "model.tar.gz").write_bytes(b"...")
    with pytest.raises(EvaluationError, match="cannot extract") as caught:
        extract_model(tmp_path / "model.tar.gz", tmp_path)
    assert isinstance(caught.value, UserError)


def test_the_report_states_the_fractions_achieved_and_warns_of_an_empty_split(synth_tub, tmp_path, capsys):
    args = ["--input", str(synth_tub), "--output", str(tmp_path), "--workers", "1"]
    assert main([*args, "--split-by", "session", "--block-frames", "50"]) == 0  # 3 sessions: 3 units
    report = json.loads((tmp_path / "report" / "data_report.json").read_text())
    splits = report["splits"]
    assert sum(entry["frames"] for entry in splits.values()) == 300
    for name, target in (("train", 0.7), ("validation", 0.15), ("test", 0.15)):
        assert splits[name]["target_fraction"] == target
        assert splits[name]["fraction"] == round(splits[name]["frames"] / 300, 4)
    empty = [name for name, entry in splits.items() if entry["frames"] == 0]
    assert empty  # three sessions cannot fill three splits at 70/15/15 here
    assert report["warnings"] == [w for w in report["warnings"] if "split is empty" in w]
    assert [w.split(" split")[0].removeprefix("the ") for w in report["warnings"]] == empty
    err = capsys.readouterr().err
    assert all(f"preprocess: warning: {w}" in err for w in report["warnings"])
    assert report["split_by"] == "session" and report["split_units"] == {"tub": {"by": "session"}}
