"""Preprocess on several instances: the robocar pipeline's own Preprocess step run locally with
ProcessingInstanceCount 1 and 2 on archived synthetic tubs gives every frame the same split and the
same accounting, and the readers of training, evaluation and compilation read every instance's shards.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.aws import clients
from pipelines import datasets
from pipelines.local import run_local
from pipelines.synth import write_tub
from processing.preprocess import ReportError, main, merge_reports, read_data_report
from processing.shards import SPLITS, load_split

BUCKET = "robocar-data-123456789012"
RAW = f"s3://{BUCKET}/robocar/raw"
TUBS = {  # name: (frames, sessions); "sessions" has enough sessions to be split by session
    "day1": (240, 2),
    "day2": (160, 1),
    "sessions": (180, 12),
}


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> Path:
    """Each synthetic tub as a .tar.gz (one image removed from day1: a rejection to account for)."""
    root = tmp_path_factory.mktemp("tubs")
    raw = root / "raw"
    raw.mkdir()
    for seed, (name, (frames, sessions)) in enumerate(TUBS.items()):
        write_tub(root / name, frames=frames, sessions=sessions, seed=seed)
        if name == "day1":
            (root / name / "images" / "17_cam_image_array_.jpg").unlink()
        with tarfile.open(raw / f"{name}.tar.gz", "w:gz") as tar:
            tar.add(root / name, arcname=name)
    return raw


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    """The robocar pipeline's parameters and its Preprocess step, exactly as the pipeline defines them."""
    from pipelines.code_bundle import CodeBundle
    from pipelines.robocar.pipeline import get_pipeline

    code = CodeBundle(bucket=BUCKET, prefix="robocar")
    whole = json.loads(get_pipeline(default_bucket=BUCKET, code=code).definition())
    preprocess = [step for step in whole["Steps"] if step["Name"] == "Preprocess"]
    return {**whole, "Steps": preprocess, "_code": code}


def snapshot_raw(s3: Any) -> datasets.Snapshot:
    """The dataset Preprocess reads: the archives under raw/, named by content (pipelines/datasets.py)."""
    return datasets.snapshot(
        s3, datasets.raw_uri(BUCKET, "robocar"), datasets.datasets_uri(BUCKET, "robocar")
    )


def run_preprocess(definition: dict[str, Any], archives: Path, workspace: Path, instances: int) -> Path:
    """Run the step in a fresh workspace; returns its output folder (train/, validation/, ...)."""
    aws = clients(local_root=str(workspace))
    aws.s3.create_bucket(Bucket=BUCKET)
    definition = dict(definition)
    definition.pop("_code").upload(aws.s3, json.dumps(definition))
    for archive in sorted(archives.iterdir()):
        aws.s3.upload_file(str(archive), BUCKET, f"robocar/raw/{archive.name}")
    dataset = snapshot_raw(aws.s3)
    parameters = {"ProcessingInstanceCount": instances, "InputDataUrl": dataset.manifest_uri}
    execution = run_local(definition, workspace, parameters, pipeline_name="robocar-pipeline")
    assert execution.status == "Succeeded", (execution.failure_reason, execution.steps["Preprocess"].log_path)
    return workspace / "s3" / BUCKET / "robocar" / "preprocess" / execution.execution_id


def frame_splits(output: Path) -> dict[tuple[str, str, int], str]:
    found: dict[tuple[str, str, int], str] = {}
    for split in SPLITS:
        arrays, _ = load_split(output / split)
        for key in zip(
            arrays["tub"].tolist(), arrays["session"].tolist(), arrays["index"].tolist(), strict=True
        ):
            assert key not in found, f"{key} in {found.get(key)} and {split}"
            found[key] = split
    return found


@pytest.fixture(scope="module")
def outputs(definition, archives, tmp_path_factory) -> dict[int, Path]:
    return {
        count: run_preprocess(definition, archives, tmp_path_factory.mktemp(f"instances-{count}"), count)
        for count in (1, 2)
    }


def test_two_instances_each_write_their_part_under_the_same_prefixes(outputs):
    one, two = outputs[1], outputs[2]
    assert sorted(p.name for p in (one / "train").glob("*.json")) == ["dataset.json"]
    assert sorted(p.name for p in (two / "train").glob("*.json")) == [
        "dataset-algo-1.json",
        "dataset-algo-2.json",
    ]
    assert sorted(p.name for p in (two / "report").iterdir()) == [
        "data_report-algo-1.json",
        "data_report-algo-2.json",
    ]
    tubs = {
        host: [
            tub["tub"]
            for tub in json.loads((two / "report" / f"data_report-{host}.json").read_text())["tubs"]
        ]
        for host in ("algo-1", "algo-2")
    }
    # ShardedByS3Key: each instance was given whole archives, none twice
    assert sorted(tubs["algo-1"] + tubs["algo-2"]) == [
        "day1.tar.gz/day1",
        "day2.tar.gz/day2",
        "sessions.tar.gz/sessions",
    ]
    assert tubs["algo-1"] and tubs["algo-2"]


def test_every_frame_lands_in_the_same_split_on_one_or_two_instances(outputs):
    one, two = frame_splits(outputs[1]), frame_splits(outputs[2])
    assert len(one) == sum(frames for frames, _ in TUBS.values()) - 1  # the one rejected image
    assert one == two
    assert {split for split in one.values()} == set(SPLITS)


def test_the_merged_accounting_equals_the_single_instance_one(outputs):
    single = read_data_report(outputs[1] / "report")
    merged = read_data_report(outputs[2] / "report")
    for field in ("tubs", "total", "rejected_fraction", "split_by", "split_units", "status", "warnings"):
        assert merged[field] == single[field], field
    total = merged["total"]
    assert total["read"] == total["accepted"] + total["rejected"] + total["deleted"] == 580
    assert total["rejections"] == [
        {"tub": "day1.tar.gz/day1", "index": 17, "reason": total["rejections"][0]["reason"]}
    ]
    assert merged["split_units"]["sessions.tar.gz/sessions"] == {"by": "session"}
    assert merged["split_units"]["day2.tar.gz/day2"] == {"by": "block", "block_frames": 8}  # 160 frames / 20
    for split in SPLITS:
        mine, theirs = merged["splits"][split], single["splits"][split]
        assert (mine["frames"], mine["fraction"], mine["sessions"]) == (
            theirs["frames"],
            theirs["fraction"],
            theirs["sessions"],
        )
        assert mine["target_fraction"] == theirs["target_fraction"]
        assert set(mine["parts"]) == {"algo-1", "algo-2"}


def test_training_evaluation_and_compilation_read_every_shard(outputs):
    from processing.evaluate import load_test_split
    from processing.local_compile import load_images
    from training.train import load_driving_split

    expected = {split: load_split(outputs[1] / split)[0] for split in SPLITS}
    train, meta = load_driving_split(outputs[2] / "train")
    validation, _ = load_driving_split(outputs[2] / "validation")
    test, _ = load_test_split(outputs[2] / "test")
    compile_train = load_images(outputs[2] / "train")
    assert meta["parts"] == ["dataset-algo-1.json", "dataset-algo-2.json"]
    assert len(meta["shards"]) == sum(
        len(json.loads((outputs[2] / "train" / part).read_text())["shards"]) for part in meta["parts"]
    )
    for split, arrays in (("train", train), ("validation", validation), ("test", test)):
        order = np.lexsort((arrays["index"], arrays["tub"]))  # the parts hold the same frames, in host order
        mine = {key: value[order] for key, value in arrays.items()}
        for key, value in expected[split].items():
            np.testing.assert_array_equal(mine[key], value, err_msg=f"{split}/{key}")
    assert len(compile_train) == len(expected["train"]["images"])


def test_an_instance_count_aws_refuses_is_refused_before_anything_runs(definition, tmp_path):
    from pipelines.local import DefinitionError

    definition = {key: value for key, value in definition.items() if key != "_code"}
    for count in (0, 101):  # ProcessingClusterConfig.InstanceCount: 1..100 in botocore's model
        with pytest.raises(DefinitionError, match="(?i)clusterConfig.instanceCount"):
            run_local(
                definition, tmp_path, {"ProcessingInstanceCount": count}, pipeline_name="robocar-pipeline"
            )


def test_instances_writing_the_same_name_fail_the_step_locally(definition, archives, tmp_path):
    """On AWS the second EndOfJob upload would silently replace the first; here the step fails."""
    import copy

    blind = copy.deepcopy({key: value for key, value in definition.items() if key != "_code"})
    arguments = blind["Steps"][0]["Arguments"]["AppSpecification"]["ContainerArguments"]
    del arguments[arguments.index("--resource-config") :]  # each instance then believes it is alone
    aws = clients(local_root=str(tmp_path))
    aws.s3.create_bucket(Bucket=BUCKET)
    definition["_code"].upload(aws.s3, json.dumps(blind))
    for archive in sorted(archives.iterdir()):
        aws.s3.upload_file(str(archive), BUCKET, f"robocar/raw/{archive.name}")
    dataset = snapshot_raw(aws.s3)
    parameters = {"ProcessingInstanceCount": 2, "InputDataUrl": dataset.manifest_uri}
    execution = run_local(blind, tmp_path, parameters, pipeline_name="robocar-pipeline")
    assert execution.status == "Failed"
    reason = execution.steps["Preprocess"].failure_reason
    assert "instances algo-1 and algo-2 both wrote" in reason and "dataset.json" in reason
    assert not (tmp_path / "s3" / BUCKET / "robocar" / "preprocess").exists()  # nothing uploaded


# --- one instance of several, as a command ----------------------------------------------------------


def resource_config(tmp_path: Path, host: str, hosts: list[str]) -> Path:
    path = tmp_path / f"resourceconfig-{host}.json"
    path.write_text(json.dumps({"current_host": host, "hosts": hosts}))
    return path


def test_a_loose_tub_is_refused_on_several_instances(archives, tmp_path, capsys):
    raw = tmp_path / "raw"
    shutil.copytree(archives, raw)
    (raw / "loose").mkdir()
    (raw / "loose" / "manifest.json").write_text("{}")
    config = resource_config(tmp_path, "algo-1", ["algo-1", "algo-2"])
    assert (
        main(["--input", str(raw), "--output", str(tmp_path / "out"), "--resource-config", str(config)]) == 2
    )
    err = capsys.readouterr().err
    assert "loose/manifest.json is not a tub archive: on 2 instances" in err and err.count("\n") == 1


@pytest.mark.parametrize("folder", ["empty", "absent"])
def test_an_instance_given_no_object_writes_empty_parts(tmp_path, folder):
    if folder == "empty":
        (tmp_path / "raw").mkdir()
    config = resource_config(tmp_path, "algo-3", ["algo-1", "algo-2", "algo-3"])
    out = tmp_path / "out"
    args = ["--input", str(tmp_path / "raw"), "--output", str(out), "--resource-config", str(config)]
    assert main(args) == 0
    report = json.loads((out / "report" / "data_report-algo-3.json").read_text())
    assert report["status"] == "ok" and report["tubs"] == [] and report["total"]["read"] == 0
    arrays, dataset = load_split(out / "train")
    assert dataset["frames"] == 0 and len(arrays["images"]) == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["dataset-algo-3.json"]


@pytest.mark.parametrize(
    "config",
    [
        {"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]},
        {"current_host": "../x", "hosts": ["../x", "algo-2"]},
        {"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]},
        {"hosts": ["algo-1"]},
        ["algo-1"],
    ],
)
def test_a_resource_config_that_names_no_instance_is_refused(tmp_path, capsys, config):
    (tmp_path / "resourceconfig.json").write_text(json.dumps(config))
    args = ["--input", str(tmp_path), "--output", str(tmp_path / "out")]
    assert main([*args, "--resource-config", str(tmp_path / "resourceconfig.json")]) == 2
    assert "resourceconfig.json: expected" in capsys.readouterr().err


def test_reports_that_are_not_one_job_are_refused(outputs, tmp_path):
    parts = [json.loads(p.read_text()) for p in sorted((outputs[2] / "report").iterdir())]
    with pytest.raises(ReportError, match="instances"):
        merge_reports(parts[:1] + parts[:1])  # algo-1 twice, algo-2 missing
    other_seed = {**parts[1], "seed": 7}
    with pytest.raises(ReportError, match="disagree on seed"):
        merge_reports([parts[0], other_seed])
    shutil.copytree(outputs[2] / "report", tmp_path / "report")
    shutil.copy(outputs[1] / "report" / "data_report.json", tmp_path / "report")
    with pytest.raises(ReportError, match="both"):
        read_data_report(tmp_path / "report")
