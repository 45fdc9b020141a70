"""The main job (``make demo``): synthetic tubs -> the whole pipeline locally -> approve -> the car drives;
then the classifier recipe the same way (pipelines/demo_classifier.py), the auto-labelling loop on that
classifier (pipelines/demo_labelling.py), then the detection recipe (pipelines/demo_detection.py), and
one summary.

Each stage runs the very command a user would type (echoed as ``$ robocar ...``), so the demo is also
the tutorial. The summary at the end is read back from what the stages wrote: the data report, the
evaluation, the registry, the compiled artifacts and the car's drive log.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.s3_uri import split_s3_uri
from edge.settings import DEFAULT_WORKSPACE as SHARED_WORKSPACE
from edge.settings import default_of
from pipelines.settings import EXAMPLE_VALUES

# The demo passes the settings' defaults as flags, so a robocar.toml or ROBOCAR_* variable of the user's
# does not change what it runs; the values are edge/settings.py's, not copies.
DEFAULT_WORKSPACE = Path(SHARED_WORKSPACE) / "demo"  # its own workspace, beside the user's
PIPELINE_NAME = default_of("pipeline_name")
GROUP = default_of("model_package_group")
PREFIX = default_of("prefix")
EDGE_TARGET = default_of("edge_target")
EDGE_ARTIFACT = "litert-int8"
# The demo's own choice, deliberately not the pipeline's default (training.spec.DEFAULT_EPOCHS): fewer
# epochs, so that `make demo` on a laptop's CPU ends sooner; passed as --param Epochs.
DEMO_EPOCHS = 12


class DemoError(RuntimeError):
    """A stage failed; the message says which and where its log is."""


@dataclass
class DemoConfig:
    workspace: Path = DEFAULT_WORKSPACE
    frames: int = 5000
    sessions: int = 6
    seed: int = 7
    epochs: int = DEMO_EPOCHS
    drive_frames: int = 1000
    parameters: Sequence[str] = field(default_factory=tuple)
    classifier: bool = True  # then the classifier recipe (pipelines/demo_classifier.py)
    labelling: bool = True  # then the auto-labelling loop on that classifier (pipelines/demo_labelling.py)
    detection: bool = True  # then the detection recipe (pipelines/demo_detection.py)


def _settings_flags() -> list[str]:
    where = {**EXAMPLE_VALUES, "prefix": PREFIX, "pipeline-name": PIPELINE_NAME, "model-package-group": GROUP}
    return [token for key, value in where.items() for token in (f"--{key}", value)]


def recipe_settings_flags(recipe: str) -> list[str]:
    """``--recipe`` and the settings as flags for one image recipe, with its pipeline and group
    (edge/settings.py RECIPE_NAMES), as ``_settings_flags`` does for the pilot."""
    from edge.settings import RECIPE_NAMES

    pipeline, group = RECIPE_NAMES[recipe]
    where = {**EXAMPLE_VALUES, "prefix": PREFIX, "pipeline-name": pipeline, "model-package-group": group}
    return ["--recipe", recipe, *(token for key, value in where.items() for token in (f"--{key}", value))]


@dataclass(frozen=True)
class ImageRecipeDemo:
    """One image recipe's half of the demo (pipelines/demo_classifier.py, pipelines/demo_detection.py):
    labelled synthetic photos -> ``robocar run --local`` -> approve -> the car answers new photos."""

    recipe: str  # classifier | detection
    synth: str  # robocar data synth's flag: --classifier | --detection
    data: str  # workspace folder of the labelled photos (--data)
    unseen: str  # workspace folder of the new photos the car answers
    car: str  # workspace folder of the car's root
    answers: str  # the car's JSON lines <answers>.jsonl and summary <answers>-summary.json
    classes: int
    photos: int
    epochs: int
    car_photos: int
    artifact: str  # the artifact the car prefers


def run_image_recipe_demo(
    demo: ImageRecipeDemo, workspace: Path, seed: int
) -> tuple[dict[str, Any], Path, Path]:
    """Every stage of an image recipe's half; returns (the car's run summary, the new photos' folder, the
    car's JSON lines)."""
    labelled = workspace / demo.data / f"synth-{demo.classes}x{demo.photos}-s{seed}"
    if not labelled.exists():
        robocar(
            "data", "synth", demo.synth, "--out", labelled, "--classes", demo.classes,
            "--images", demo.photos, "--seed", seed,
        )  # fmt: skip
    else:
        print(f"\nlabelled photos already in {labelled} (delete the workspace to make them anew)")
    epochs = f"Epochs={demo.epochs}"
    flags = recipe_settings_flags(demo.recipe)
    robocar(
        "run", "--local", "--workspace", workspace, "--data", workspace / demo.data, "--param", epochs, *flags
    )
    from edge.settings import RECIPE_NAMES

    approve_if_registered(workspace, RECIPE_NAMES[demo.recipe][1], ["--recipe", demo.recipe])
    unseen = workspace / demo.unseen / f"synth-{demo.classes}x{demo.car_photos}-s{seed + 1000}"
    if not unseen.exists():
        robocar(
            "data", "synth", demo.synth, "--out", unseen, "--classes", demo.classes,
            "--images", demo.car_photos, "--seed", seed + 1000,
        )  # fmt: skip
    car = workspace / demo.car
    edge = ["--root", car, "--workspace", workspace, "--recipe", demo.recipe, "--target", EDGE_TARGET]
    robocar("edge", "pull", *edge, "--prefer", demo.artifact)
    results = workspace / f"{demo.answers}.jsonl"
    summary_json = workspace / f"{demo.answers}-summary.json"
    results.unlink(missing_ok=True)  # `edge run --output` appends; the summary scores this run's answers
    robocar(
        "edge", "run", *edge, "--prefer", demo.artifact, "--no-pull", "--images", unseen / "images",
        "--output", results, "--summary-json", summary_json, "--quiet",
    )  # fmt: skip
    summary = json.loads(summary_json.read_text()) if summary_json.exists() else {}
    return summary, unseen, results


def robocar(*argv: str | Path, main: Callable[[list[str]], int] | None = None) -> None:
    """Run one ``robocar`` command in this process, echoed first; a non-zero exit stops the demo."""
    from pipelines.cli import main as cli_main

    args = [str(a) for a in argv]
    print(f"\n$ robocar {shlex.join(args)}", flush=True)
    code = (main or cli_main)(args)
    if code != 0:
        raise DemoError(f"`robocar {args[0]} {args[1] if len(args) > 1 else ''}` exited with status {code}")


def approve_if_registered(workspace: Path, group: str, which: list[str]) -> None:
    """``robocar registry list``, then approve the newest package awaiting approval. A rerun whose model
    is registered already (the cached steps train the same model: ShouldRegister -> False) registers
    nothing, and the package approved the first time stays the one the car pulls."""
    from pipelines.local.registry import LocalSageMakerClient

    registry = ["--workspace", workspace, *which]
    robocar("registry", "list", *registry)
    pending = LocalSageMakerClient(workspace).list_model_packages(
        ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval"
    )["ModelPackageSummaryList"]
    if not pending:
        print(f"\nnothing to approve in {group}: this run registered no new package")
        return
    robocar(
        "registry", "approve", "latest", *registry, "--description", "approved by the demo after its metrics"
    )


def _s3_json(s3: Any, uri: str) -> dict[str, Any]:
    bucket, key = split_s3_uri(uri)
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _human_bytes(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _metric(metrics: dict[str, Any] | None, name: str) -> float | None:
    value = (metrics or {}).get(name)
    return None if value is None else float(value["value"] if isinstance(value, dict) else value)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def newest_execution(workspace: Path, pipeline_name: str = PIPELINE_NAME) -> Any:
    """The demo's newest local execution record (every output lives under its execution's id)."""
    from pipelines.local.store import load

    records = sorted(
        (workspace / "executions" / pipeline_name).glob("*/execution.json"), key=lambda p: p.stat().st_mtime
    )
    if not records:
        raise DemoError(f"no execution of {pipeline_name} in {workspace}")
    return load(records[-1].parent)


def output_uri(execution: Any, step: str, output: str) -> str:
    """Where ``step`` of ``execution`` wrote its ``output`` (a cached step: where the earlier run did)."""
    outputs = execution.steps[step].properties["ProcessingOutputConfig"]["Outputs"]
    return next(o["S3Output"]["S3Uri"] for o in outputs if o["OutputName"] == output).rstrip("/")


def this_models_package(sagemaker: Any, execution: Any, group: str = GROUP) -> dict[str, Any] | None:
    """The package holding the model this execution trained (or took from the cache), else the newest
    package with an artifact for the demo's car (``compiled_report_uri`` reads that artifact's URI)."""
    from edge import registry
    from processing.evaluate import registered_package

    model = execution.steps["Train"].properties["ModelArtifacts"]["S3ModelArtifacts"]
    return registered_package(sagemaker, group, model) or registry.newest(
        sagemaker, group, target=EDGE_TARGET
    )


def compiled_report_uri(execution: Any, package: dict[str, Any] | None) -> str:
    """compiled.json of this execution's model: its own CompileForEdge's or, when an identical rerun
    compiled and registered nothing (ShouldRegister -> False), the one beside the package's artifact."""
    if "CompileForEdge" in execution.steps or package is None:
        return f"{output_uri(execution, 'CompileForEdge', 'compiled')}/compiled.json"
    artifact = package["CustomerMetadataProperties"][f"edge:{EDGE_TARGET}:uri"]  # .../compiled/<target>/...
    return f"{artifact.rsplit('/', 2)[0]}/compiled.json"


@dataclass(frozen=True)
class ImageRecipeOutputs:
    """What an image recipe's execution wrote that its summary reads."""

    data: dict[str, Any]  # Preprocess's data-report.json
    evaluation: dict[str, Any]  # Evaluate's evaluation.json
    package: dict[str, Any] | None  # the model package holding this execution's model
    compiled: dict[str, Any]  # CompileForEdge's compiled.json


def image_recipe_outputs(workspace: Path, execution: Any, group: str) -> ImageRecipeOutputs:
    from edge.aws import clients

    aws = clients(local_root=str(workspace))
    package = this_models_package(aws.sagemaker, execution, group)
    return ImageRecipeOutputs(
        data=_s3_json(aws.s3, f"{output_uri(execution, 'Preprocess', 'report')}/data-report.json"),
        evaluation=_s3_json(aws.s3, f"{output_uri(execution, 'Evaluate', 'evaluation')}/evaluation.json"),
        package=package,
        compiled=_s3_json(aws.s3, compiled_report_uri(execution, package)),
    )


def image_data_line(data: dict[str, Any], photos: str) -> str:
    """``data      600 labelled photos read: ...``: the data report's counts and splits."""
    splits = data["splits"]
    return (
        f"data      {data['read']} {photos} photos read: {data['accepted']} accepted, {data['rejected']} "
        f"rejected; {len(data['classes'])} classes; train/validation/test "
        f"{splits['train']['images']}/{splits['validation']['images']}/{splits['test']['images']}"
    )


def package_lines(outputs: ImageRecipeOutputs) -> list[str]:
    """The package (ARN, approval) and each target's compiled artifact with its default."""
    lines, package = [], outputs.package
    if package:
        lines.append(f"package   {package['ModelPackageArn']} ({package['ModelApprovalStatus']})")
    for target, entry in sorted(outputs.compiled["targets"].items()):
        lines.append(
            f"artifacts {target:<12} model.tar.gz {_human_bytes(int(entry['size_bytes'])):>10}  "
            f"default {entry.get('default')}"
        )
    return lines


def learned_lines(model: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """Whether each output was learned: its test MAE as a share of the constant baseline's."""
    lines = []
    for label in ("angle", "throttle"):
        mae, base_mae = _metric(model, f"{label}_mae"), _metric(baseline, f"{label}_mae")
        if mae is not None and base_mae:
            lines.append(f"          {label} MAE is {100 * mae / base_mae:.1f}% of the constant baseline's")
    return lines


def summarise(
    workspace: Path,
    drive_summary: dict[str, Any],
    wall_s: float,
    classified: dict[str, Any] | None = None,
    labelled: dict[str, Any] | None = None,
    detected: dict[str, Any] | None = None,
) -> str:
    """The closing summary: data accounting, metrics, the package, artifacts, the car's frames/s; then
    the classifier's (``classified``: what its car reported), the auto-labelling loop's (``labelled``:
    where its stages wrote) and the detector's (``detected``) when the demo ran them."""
    from edge.aws import clients

    aws = clients(local_root=str(workspace))
    execution = newest_execution(workspace)
    data = _s3_json(aws.s3, f"{output_uri(execution, 'Preprocess', 'report')}/data_report.json")
    evaluation = _s3_json(aws.s3, f"{output_uri(execution, 'Evaluate', 'evaluation')}/evaluation.json")
    package = this_models_package(aws.sagemaker, execution)
    compiled = _s3_json(aws.s3, compiled_report_uri(execution, package))
    total = data["total"]
    lines = ["", "=" * 78, "robocar demo: summary", "=" * 78]
    lines.append(
        f"data      {total['read']} records read: {total['accepted']} accepted, "
        f"{total['rejected']} rejected, "
        f"{total['deleted']} deleted ({len(data['tubs'])} tub(s))"
    )
    model = evaluation["regression_metrics"]
    baseline = evaluation["baseline"]["regression_metrics"]
    champion = evaluation.get("champion")
    lines.append(
        f"metrics   on {evaluation.get('test_frames', '?')} test frames       model    baseline  champion"
    )
    champion_metrics = (champion or {}).get("regression_metrics")
    for name in ("angle_mae", "angle_rmse", "throttle_mae", "angle_r2"):
        lines.append(
            f"          {name:<24} {_fmt(_metric(model, name)):>8} {_fmt(_metric(baseline, name)):>10} "
            f"{_fmt(_metric(champion_metrics, name)):>9}"
        )
    lines += learned_lines(model, baseline)
    if package:
        lines.append(f"package   {package['ModelPackageArn']}")
        lines.append(f"          status {package['ModelApprovalStatus']}")
    lines.append("artifacts")
    for target, entry in sorted(compiled["targets"].items()):
        lines.append(
            f"          {target:<12} model.tar.gz {_human_bytes(int(entry['size_bytes'])):>10}  "
            f"sha256 {entry['sha256'][:16]}...  runtimes: {', '.join(entry.get('runtimes', []))}"
        )
    if drive_summary:
        lines.append(
            f"car       drove {drive_summary.get('frames')} frames with "
            f"{drive_summary.get('artifact', '?')}: "
            f"{drive_summary.get('fps', 0):.0f} frames/s, p50 latency "
            f"{drive_summary.get('latency_ms', {}).get('p50', 0):.2f} ms"
        )
    if (execution.path / "report.html").is_file():
        lines.append(f"report    {execution.path / 'report.html'}")
    if classified is not None:
        from pipelines.demo_classifier import summary_lines

        lines += ["-" * 78, *summary_lines(workspace, classified)]
    if labelled is not None:
        from pipelines.demo_labelling import summary_lines as labelling_summary

        lines += ["-" * 78, *labelling_summary(workspace, labelled)]
    if detected is not None:
        from pipelines.demo_detection import summary_lines as detection_lines

        lines += ["-" * 78, *detection_lines(workspace, detected)]
    lines.append(f"time      {wall_s:.0f} s in all")
    return "\n".join(lines)


def run_demo(config: DemoConfig) -> int:
    started = time.monotonic()
    workspace = config.workspace.resolve()
    tubs = workspace / "tubs"
    tub = tubs / f"synth-{config.frames}-s{config.seed}"
    flags = _settings_flags()
    print(f"robocar demo: the whole pipeline locally in {workspace} (no AWS account, no Docker)")
    if not tub.exists():
        synth = [
            "--out",
            tub,
            "--frames",
            config.frames,
            "--sessions",
            config.sessions,
            "--seed",
            config.seed,
        ]
        robocar("data", "synth", *synth)
    else:
        print(f"\nsynthetic tubs already in {tub} (delete the workspace to make them anew)")
    assignments = (f"Epochs={config.epochs}", *config.parameters)
    params = [token for assignment in assignments for token in ("--param", assignment)]
    robocar("run", "--local", "--workspace", workspace, "--data", tubs, *params, *flags)
    approve_if_registered(workspace, GROUP, ["--group", GROUP])
    car = workspace / "car"
    drive_json = workspace / "drive-summary.json"
    edge = ["--root", car, "--workspace", workspace, "--group", GROUP, "--target", EDGE_TARGET]
    robocar("edge", "pull", *edge, "--prefer", EDGE_ARTIFACT)
    drive = ["--no-pull", "--source", f"tub:{tub}", "--max-frames", config.drive_frames]
    outputs = ["--jsonl", workspace / "drive.jsonl", "--summary-json", drive_json]
    robocar("edge", "run", *edge, "--prefer", EDGE_ARTIFACT, *drive, *outputs)
    drive = json.loads(drive_json.read_text()) if drive_json.exists() else {}
    classified: dict[str, Any] | None = None
    if config.classifier:
        from pipelines.demo_classifier import run_classifier_demo

        classified = run_classifier_demo(workspace, config.seed)
    labelled: dict[str, Any] | None = None
    if config.classifier and config.labelling:
        from pipelines.demo_labelling import run_labelling_demo

        labelled = run_labelling_demo(workspace, config.seed)
    detected: dict[str, Any] | None = None
    if config.detection:
        from pipelines.demo_detection import run_detection_demo

        detected = run_detection_demo(workspace, config.seed)
    print(summarise(workspace, drive, time.monotonic() - started, classified, labelled, detected))
    return 0


def main(config: DemoConfig) -> int:
    try:
        return run_demo(config)
    except DemoError as exc:
        print(f"\nrobocar demo: stopped: {exc}", file=sys.stderr)
        return 1
