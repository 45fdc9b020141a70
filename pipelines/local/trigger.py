"""Local EventBridge: one recipe's two rules of ``infra/template.yaml`` driven by polling the local workspace.

A watch serves one recipe (``TriggerConfig.recipe``): the pilot's rules watch ``<prefix>/raw/`` (tubs) and
its group, the classifier's ``<prefix>/raw-classifier/`` and the detector's ``<prefix>/raw-detection/``
(Ground Truth output manifests and their photos) and their groups; each starts only its own pipeline
and rolls out to its own component and thing group.
Each poll (``poll_once``):

1. lists the recipe's raw-data prefix of the local S3 folder (``ROOT/s3/<bucket>/<prefix>/<raw folder>/``,
   ``pipelines.datasets.RAW_FOLDERS``), turns every
   object into the event S3 would send (``pipelines.events.s3_object_created_event``), matches it
   against the recipe's "new data" rule (``pipelines.events.new_data_pattern`` through
   ``pipelines.event_pattern``)
   and, for each matching event, runs the rule's target, the snapshot function
   (``infra/snapshot/handler.py``): the raw prefix is snapshotted into a dataset manifest and the pipeline
   started on it with the dataset's ``ClientRequestToken``, so events for one dataset start one execution;
2. lists the model packages of the group, turns every approval-status change since the last poll into
   the ``SageMaker Model Package State Change`` event, matches it against the "approved" rule and runs
   the rollout function (``infra/rollout/handler.py``) with local clients: Greengrass has no local
   service, so ``LocalGreengrassClient`` records component versions and deployments under
   ``ROOT/greengrass/`` with Greengrass's method names and answers.

Delivery is at least once, as EventBridge's: the state file (``ROOT/triggers/state.json``, under a lock)
remembers each object event by bucket/key/ETag/sequencer, so an event seen twice (a second poll, a second
watcher) starts one execution; a rewritten object is a new event, as on S3.

The first poll of a workspace is the moment the rule is created: EventBridge never reports objects
created before its rule, and every execution trains on the whole raw-data prefix, so tubs older than the
pipeline's last execution (``robocar run --local``) are recorded as processed instead of started. A tub
(or a labelled set: a Ground Truth manifest and the photos in its folder) still being copied in is
deferred until its files are ``settle_s`` old.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edge.atomic_files import atomic_write_json, file_lock
from edge.aws_errors import ClientError, check_params, client_error, response_metadata
from edge.greengrass.component import COMPONENT_NAMES
from edge.local_readers import from_iso, now_utc, page_items, to_iso
from edge.settings import default_of
from pipelines import event_pattern, events
from pipelines.aws_rules import validated
from pipelines.local.s3 import LocalS3Client

STATE_FORMAT = "robocar-triggers/1"
# Each recipe's cars: a car runs one model, so a car is in one of these groups, and each recipe's approved
# packages go to its own group as its own component (edge.greengrass.component.COMPONENT_NAMES). The
# stack's thing group parameters default to these (infra/template.yaml).
THING_GROUPS = {
    "pilot": "robocar-cars",
    "classifier": "robocar-classifier-cars",
    "detection": "robocar-detector-cars",
}
DEFAULT_THING_GROUP = THING_GROUPS["pilot"]


@dataclass(frozen=True)
class TriggerConfig:
    """What the stack's parameters say on AWS (names as in ``infra/template.yaml``) for one recipe.

    ``component_name`` and ``thing_group`` left empty are the recipe's (``COMPONENT_NAMES``,
    ``THING_GROUPS``).
    """

    bucket: str
    prefix: str  # the pipeline's prefix; the recipe's raw data arrives under <prefix>/<raw folder>/
    pipeline_name: str
    model_package_group: str
    region: str = "us-east-1"
    account: str = events.EXAMPLE_ACCOUNT
    component_name: str = ""
    edge_target: str = default_of("edge_target")  # the cars' target (edge/settings.py)
    thing_group: str = ""
    recipe: str = "pilot"

    def __post_init__(self) -> None:
        from pipelines.datasets import RAW_FOLDERS

        if self.recipe not in RAW_FOLDERS:
            raise ValueError(f"no recipe {self.recipe!r} (recipes: {', '.join(RAW_FOLDERS)})")
        if self.recipe not in COMPONENT_NAMES:  # the stack has rules and a component for these only
            served = ", ".join(COMPONENT_NAMES)
            raise ValueError(f"the stack's rules serve {served}; {self.recipe} has none yet: run it by hand")
        # frozen: the recipe's defaults are filled in once, here
        object.__setattr__(self, "component_name", self.component_name or COMPONENT_NAMES[self.recipe])
        object.__setattr__(self, "thing_group", self.thing_group or THING_GROUPS[self.recipe])

    @property
    def raw_folder(self) -> str:
        from pipelines.datasets import RAW_FOLDERS

        return RAW_FOLDERS[self.recipe]

    @property
    def raw_prefix(self) -> str:
        return events.normalize_prefix(f"{self.prefix.strip('/')}/{self.raw_folder}")

    def new_data_pattern(self) -> dict[str, Any]:
        """The recipe's "new data" rule for this bucket and prefix (``pipelines.events``)."""
        return events.new_data_pattern(self.bucket, self.raw_prefix, self.recipe)

    @property
    def thing_group_arn(self) -> str:
        return f"arn:aws:iot:{self.region}:{self.account}:thinggroup/{self.thing_group}"


@dataclass
class PollReport:
    started: list[dict[str, str]] = field(default_factory=list)  # {"key", "execution_arn", "status"}
    duplicates: int = 0  # object events already delivered
    not_matched: int = 0  # objects the "new data" rule ignores (images, catalogs, ...)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    package_events: int = 0
    deferred: int = 0  # matching objects still being written (see ``settle_s``)
    already_processed: int = 0  # first poll: tubs the pipeline's last execution already trained on
    same_dataset: list[dict[str, str]] = field(default_factory=list)  # started by an earlier event

    def lines(self) -> Iterator[str]:
        if self.already_processed:
            yield (
                f"{self.already_processed} upload(s) older than the pipeline's last execution: already "
                "trained on, not started (as EventBridge reports only objects created after the rule)"
            )
        for run in self.started:
            uri = f"s3://{run['bucket']}/{run['key']}"
            yield f"new data {uri} -> {run['dataset']} -> execution {run['execution_arn']} ({run['status']})"
        for run in self.same_dataset:
            uri = f"s3://{run['bucket']}/{run['key']}"
            yield (
                f"new data {uri} -> {run['dataset']}: an unchanged dataset, already started as execution "
                f"{run['execution_arn']}"
            )
        for rollout in self.rollouts:
            if rollout.get("status") == "deployed":
                yield (
                    f"approved {rollout['modelPackageArn']} -> component {rollout['componentName']} "
                    f"{rollout['componentVersion']} deployed to {rollout['targetArn']}"
                )
            else:
                arn = rollout.get("modelPackageArn", "")
                yield f"rollout {arn}: {rollout['status']}: {rollout.get('reason', '')}"


# ---------------------------------------------------------------- state
def state_path(root: Path) -> Path:
    return Path(root) / "triggers" / "state.json"


def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"format": STATE_FORMAT, "objects": {}, "packages": {}}
    state = json.loads(path.read_text())
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a trigger state file ({STATE_FORMAT})")
    return state


def _update_state(root: Path, change: Callable[[dict[str, Any]], Any]) -> Any:
    """Read-modify-write the state under the lock; returns what ``change`` returns."""
    path = state_path(root)
    with file_lock(path.with_name(".lock")):
        state = _load_state(path)
        result = change(state)
        atomic_write_json(path, state)
    return result


def delivery_key(event: dict[str, Any]) -> str:
    """What makes two S3 events the same delivery: bucket, key, ETag and sequencer."""
    detail = event["detail"]
    obj = detail["object"]
    return f"{detail['bucket']['name']}/{obj['key']}#{obj.get('etag', '')}#{obj.get('sequencer', '')}"


# ---------------------------------------------------------------- rule "new data"
def raw_objects(s3: Any, config: TriggerConfig) -> list[tuple[int, int, str]]:
    """``(mtime_ns, size, key)`` of the objects under the raw-data prefix, oldest first.

    The folder is walked directly: a tub holds tens of thousands of images, and listing them through the
    client reads every file for its ETag on every poll. Only matching objects are asked for their ETag.
    """
    folder = s3.uri_to_path(f"s3://{config.bucket}/{config.raw_prefix}")
    bucket_dir = s3.uri_to_path(f"s3://{config.bucket}/")
    return sorted(
        (entry.stat().st_mtime_ns, entry.stat().st_size, key) for key, entry in _walk(folder, bucket_dir)
    )


def _walk(folder: Path, bucket_dir: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(key, entry) of every file below ``folder``; in-progress uploads (``.tmp-*``) are not objects yet."""
    if not folder.is_dir():
        return
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.name.startswith(".tmp-"):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    yield Path(entry.path).relative_to(bucket_dir).as_posix(), entry


def _object_event(config: TriggerConfig, key: str, size: int, mtime_ns: int, *, etag: str) -> dict[str, Any]:
    return events.s3_object_created_event(
        config.bucket,
        key,
        size=size,
        etag=etag,
        # S3's sequencer orders the events of one key; the modification time does that locally
        sequencer=f"{mtime_ns:020X}",
        region=config.region,
        account=config.account,
        time=datetime.fromtimestamp(mtime_ns / 1e9, UTC),
    )


def start_for_new_data(
    event: dict[str, Any], root: Path, s3: Any, sagemaker: Any, config: TriggerConfig, report: PollReport
) -> None:
    """Run the snapshot function for one matching event, unless this delivery has been handled already.

    Another event of the same dataset (two tubs in one poll) gets the execution the first one started:
    the function's ClientRequestToken is the dataset's digest.
    """
    from pipelines.datasets import DatasetError
    from pipelines.infra import load_snapshot_handler

    key = delivery_key(event)

    def claim(state: dict[str, Any]) -> bool:
        if key in state["objects"]:
            return False
        state["objects"][key] = {"event_id": event["id"], "claimed": _now()}
        return True

    if not _update_state(root, claim):
        report.duplicates += 1
        return
    handler = load_snapshot_handler()
    function_config = handler.SnapshotConfig(
        config.bucket, config.prefix, config.pipeline_name, raw_folder=config.raw_folder
    )
    obj_key = event["detail"]["object"]["key"]
    try:
        result = handler.snapshot_and_start(event, s3=s3, sagemaker=sagemaker, config=function_config)
    except (sagemaker.exceptions.ClientError, DatasetError):
        # not started (no such pipeline yet, the data gone again): release the claim so a later poll retries
        _update_state(root, lambda state: state["objects"].pop(key, None))
        raise
    arn = result["pipelineExecutionArn"]
    status = _execution_status(sagemaker, arn)

    def record(state: dict[str, Any]) -> bool:
        earlier = any(entry.get("execution_arn") == arn for entry in state["objects"].values())
        state["objects"][key].update(
            execution_arn=arn, dataset=result["datasetUri"], started=_now(), status=status
        )
        return earlier

    run = {"bucket": config.bucket, "key": obj_key, "dataset": result["datasetUri"], "execution_arn": arn}
    same_dataset = _update_state(root, record)
    (report.same_dataset if same_dataset else report.started).append({**run, "status": status})


def _execution_status(sagemaker: Any, arn: str) -> str:
    try:
        return sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn).get(
            "PipelineExecutionStatus", ""
        )
    except Exception:  # noqa: BLE001 (the status is informative; the execution has started either way)
        return "Started"


# ---------------------------------------------------------------- rule "approved"
def package_events(sagemaker: Any, config: TriggerConfig, seen: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A state-change event for each package whose approval status differs from ``seen`` (ARN -> status)."""
    kwargs: dict[str, Any] = {"ModelPackageGroupName": config.model_package_group, "SortBy": "CreationTime"}
    try:
        pages = list(sagemaker.get_paginator("list_model_packages").paginate(**kwargs))
    except sagemaker.exceptions.ClientError:
        return  # no group yet: nothing registered, nothing to roll out
    for page in pages:
        for summary in page.get("ModelPackageSummaryList", []):
            arn, status = summary["ModelPackageArn"], summary["ModelApprovalStatus"]
            if seen.get(arn) == status:
                continue
            yield events.model_package_state_change_event(
                model_package_arn=arn,
                group=config.model_package_group,
                version=int(summary.get("ModelPackageVersion") or arn.rsplit("/", 1)[-1]),
                approval_status=status,
                package_status=summary.get("ModelPackageStatus", "Completed"),
                region=config.region,
                account=config.account,
            )


def run_rollouts(root: Path, sagemaker: Any, config: TriggerConfig, report: PollReport) -> None:
    from pipelines.infra import load_rollout_handler

    handler = load_rollout_handler()
    pattern = events.approved_pattern(config.model_package_group)
    seen = _update_state(root, lambda state: dict(state["packages"]))
    rollout_config = handler.RolloutConfig(
        config.model_package_group, config.component_name, config.edge_target, config.thing_group_arn
    )
    greengrass = validated(LocalGreengrassClient(root, config.region, config.account), "greengrassv2")
    for event in package_events(sagemaker, config, seen):
        report.package_events += 1
        arn, status = event["detail"]["ModelPackageArn"], event["detail"]["ModelApprovalStatus"]
        if event_pattern.matches(pattern, event):
            try:
                result = handler.rollout(
                    event, sagemaker=sagemaker, greengrass=greengrass, config=rollout_config
                )
            except handler.RolloutError as exc:
                result = {"status": "failed", "modelPackageArn": arn, "reason": str(exc)}
            report.rollouts.append(result)

        def record(state: dict[str, Any], arn: str = arn, status: str = status) -> None:
            state["packages"][arn] = status

        _update_state(root, record)


def rollout_after_registry_change(
    root: Path, sagemaker: Any, model_package_group: str, *, region: str = "us-east-1", **rollout: str
) -> list[str]:
    """The hook for the local registry's writers (``robocar registry approve --local``): deliver now.

    Emits the state-change events of ``model_package_group`` not yet delivered and runs the rollout for
    the approved ones, exactly as the next ``robocar trigger watch`` poll would (and instead of it: the
    state file records the delivery). ``rollout`` takes ``edge_target``, ``component_name``,
    ``thing_group`` and ``recipe`` (whose component and thing group are the defaults). Returns one line
    per rollout.
    """
    if rollout.get("recipe", "pilot") not in COMPONENT_NAMES:  # no component to roll out yet: the car pulls
        recipe = rollout["recipe"]
        return [f"no rollout: the {recipe} recipe has no Greengrass component yet (cars: robocar edge pull)"]
    config = TriggerConfig(
        bucket="",
        prefix="",
        pipeline_name="",
        model_package_group=model_package_group,
        region=region,
        **rollout,
    )
    report = PollReport()
    run_rollouts(Path(root), sagemaker, config, report)
    return list(report.lines())


def recipe_of_group(group: str, default: str = "pilot") -> str:
    """The recipe whose model package group ``group`` is by default (edge.settings.RECIPE_NAMES), else
    ``default`` (the recipe the command was given): an approval of a classifier package by its ARN alone
    rolls out as the classifier."""
    from edge.settings import RECIPE_NAMES

    return next((recipe for recipe, (_, name) in RECIPE_NAMES.items() if name == group), default)


# ---------------------------------------------------------------- the loop
def poll_once(
    root: Path,
    s3: Any,
    sagemaker: Any,
    config: TriggerConfig,
    unchanged: dict[str, tuple[int, int]] | None = None,
    *,
    settle_s: float = 0.0,
) -> PollReport:
    """One pass over both rules; executions run to the end before this returns (local executor).

    ``unchanged`` (kept by ``watch`` between polls) remembers each handled object's (mtime, size), so
    an object seen before is not turned into an event again; the state file is what dedupes deliveries.
    ``settle_s``: a matching object is delivered once it, and for a tub's ``manifest.json`` (a labelled
    set's ``*.manifest``) every file in its folder, is that many seconds old; a tub still being copied in
    (``cp -r`` writes in directory order, not manifest last) is deferred to a later poll instead of
    starting on half the images (a Ground Truth manifest copied before its photos, on half the photos).
    """
    root = Path(root)
    report = PollReport()
    is_new_data = event_pattern.matcher(config.new_data_pattern())
    objects = raw_objects(s3, config)
    first_poll = _create_rule(root, config.recipe)
    processed_before = latest_execution_start_ns(sagemaker, config.pipeline_name) if first_poll else 0
    newest = _newest_in_folder(objects, events.FOLDER_MARKERS[config.recipe])
    settled_before = time.time_ns() - int(settle_s * 1e9)
    for mtime_ns, size, key in objects:
        if unchanged is not None and unchanged.get(key) == (mtime_ns, size):
            continue
        if is_new_data(_object_event(config, key, size, mtime_ns, etag="")):
            if max(mtime_ns, newest.get(key, 0)) > settled_before:
                report.deferred += 1
                continue
            etag = s3.head_object(Bucket=config.bucket, Key=key)["ETag"].strip('"')
            event = _object_event(config, key, size, mtime_ns, etag=etag)
            if max(mtime_ns, newest.get(key, 0)) < processed_before:
                report.already_processed += 1
                _mark_processed(root, event)
            else:
                start_for_new_data(event, root, s3, sagemaker, config, report)
        else:
            report.not_matched += 1
        if unchanged is not None:
            unchanged[key] = (mtime_ns, size)
    run_rollouts(root, sagemaker, config, report)
    return report


def _create_rule(root: Path, recipe: str) -> bool:
    """Record that the recipe's rules exist from now on; True on its first poll (they did not before).

    Each recipe's rule is created by its own first watch, so the state lists the recipes watched; a state
    file from before it did ("watched" absent) was written by the pilot's watch if it holds any object.
    """

    def create(state: dict[str, Any]) -> bool:
        watched = state.setdefault("watched", ["pilot"] if state["objects"] else [])
        if recipe in watched:
            return False
        watched.append(recipe)
        return True

    return _update_state(root, create)


def latest_execution_start_ns(sagemaker: Any, pipeline_name: str) -> int:
    """When the pipeline's newest execution started (ns since the epoch), 0 when it has none.

    Every execution trains on the whole raw-data prefix, so tubs older than it are in the model already.
    """
    try:
        summaries = sagemaker.list_pipeline_executions(
            PipelineName=pipeline_name, SortBy="CreationTime", SortOrder="Descending", MaxResults=1
        )["PipelineExecutionSummaries"]
    except (AttributeError, sagemaker.exceptions.ClientError):  # no pipeline (yet), or no control plane
        return 0
    return int(summaries[0]["StartTime"].timestamp() * 1e9) if summaries else 0


def _mark_processed(root: Path, event: dict[str, Any]) -> None:
    """Record a tub found already processed as delivered, so no later poll starts it."""
    entry = {"event_id": event["id"], "already_processed": True, "claimed": _now()}
    _update_state(root, lambda state: state["objects"].setdefault(delivery_key(event), entry))


def _newest_in_folder(objects: list[tuple[int, int, str]], marker: str) -> dict[str, int]:
    """For each key ending in ``marker`` (a tub's ``/manifest.json``, a labelled set's ``.manifest``): the
    newest modification time of any file in its folder or below (the tub's images, the set's photos)."""
    marked: dict[str, list[str]] = {}
    for _, _, key in objects:
        if key.endswith(marker) and "/" in key:
            marked.setdefault(key.rsplit("/", 1)[0], []).append(key)
    newest: dict[str, int] = {}
    for mtime_ns, _, key in objects:
        folder = key
        while "/" in folder:
            folder = folder.rsplit("/", 1)[0]
            for marker_key in marked.get(folder, ()):
                newest[marker_key] = max(newest.get(marker_key, 0), mtime_ns)
    return newest


def watch(
    root: Path,
    s3: Any,
    sagemaker: Any,
    config: TriggerConfig,
    *,
    interval_s: float,
    once: bool,
    settle_s: float = 2.0,
    emit: Callable[[str], None] = print,
    stop: Callable[[], bool] = lambda: False,
) -> PollReport:
    """Poll every ``interval_s`` seconds, or once (waiting for tubs still being copied in to settle).

    Prints one line per started execution or rollout; returns the totals.
    """
    total, unchanged = PollReport(), {}
    emit(
        f"watching s3://{config.bucket}/{config.raw_prefix} (local: {Path(root) / 's3' / config.bucket}) "
        f"for the {config.recipe}'s new data, and model package group {config.model_package_group}"
    )
    while True:
        report = poll_once(root, s3, sagemaker, config, unchanged, settle_s=settle_s)
        for line in report.lines():
            emit(line)
        total.started += report.started
        total.same_dataset += report.same_dataset
        total.rollouts += report.rollouts
        total.duplicates += report.duplicates
        total.not_matched += report.not_matched
        total.package_events += report.package_events
        if once and report.deferred:
            emit(f"{report.deferred} upload(s) still being written: waiting {settle_s:g}s for them to settle")
            time.sleep(settle_s)
            continue
        if once or stop():
            return total
        time.sleep(interval_s)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- Greengrass, locally
ARTIFACT_UNREADABLE = "Specified artifact resource cannot be accessed"
DEFAULT_LIST_RESULTS = 50  # ListDeployments' maxResults default (API reference)
LOCAL_DEPLOYMENT_ID = re.compile(r"local-\d{6}")  # what create_deployment hands out


class LocalGreengrassClient:
    """``greengrassv2``'s calls the rollout makes, kept under ``ROOT/greengrass/`` and answered as AWS does.

    - ``create_component_version`` stores the recipe in ``components/<name>/<version>.json`` (a second
      create of a version is a ``ConflictException``). As the service, it reads every ``s3://`` artifact
      (here from the workspace's local S3, ``ROOT/s3/<bucket>/<key>``) and writes its ``Digest`` (base64 of
      the SHA-256 of the bytes) and ``Algorithm: SHA-256`` into the stored recipe, replacing whatever the
      recipe said; an artifact it cannot read is a ``ValidationException`` with AWS's text
      (https://docs.aws.amazon.com/greengrass/v2/developerguide/component-recipe-reference.html; the
      message as AWS words it: https://github.com/aws/aws-cli/issues/6261).
    - ``create_deployment`` stores ``deployments/<id>.json``. A target has one current deployment: the new
      one replaces the previous (which becomes ``INACTIVE`` and no longer ``isLatestForTarget``), and its
      component set is the group's, omitted components included: they are gone, as on the cars
      (https://docs.aws.amazon.com/greengrass/v2/developerguide/revise-deployments.html).
      ``deployments/latest-<thing group>.json`` is that current deployment. A repeated ``clientToken`` with
      the same request answers the first deployment.
    - ``list_deployments`` / ``get_deployment`` / ``cancel_deployment`` answer with the API's shapes.
    """

    def __init__(self, root: Path, region: str = "us-east-1", account: str = events.EXAMPLE_ACCOUNT) -> None:
        self.root = Path(root)
        self.base = self.root / "greengrass"
        self.region, self.account = region, account
        self.meta = SimpleNamespace(region_name=region, endpoint_url=None)  # as boto3's client.meta
        self.exceptions = SimpleNamespace(
            ClientError=ClientError,
            ConflictException=type("ConflictException", (ClientError,), {}),
            ValidationException=type("ValidationException", (ClientError,), {}),
            ResourceNotFoundException=type("ResourceNotFoundException", (ClientError,), {}),
        )

    # -- helpers
    def _arn(self, name: str, version: str) -> str:
        return f"arn:aws:greengrass:{self.region}:{self.account}:components:{name}:versions:{version}"

    def _error(self, code: str, message: str, operation: str, status: int) -> Exception:
        return client_error(code, message, operation, cls=getattr(self.exceptions, code), status=status)

    def _deployment_path(self, deployment_id: str) -> Path:
        return self.base / "deployments" / f"{deployment_id}.json"

    def _deployments(self) -> list[dict[str, Any]]:
        """Every stored deployment, oldest first (ids are sequential)."""
        folder = self.base / "deployments"
        return [json.loads(path.read_text()) for path in sorted(folder.glob("local-*.json"))]

    def _read_deployment(self, deployment_id: str, operation: str) -> dict[str, Any]:
        path = self._deployment_path(deployment_id)
        if not LOCAL_DEPLOYMENT_ID.fullmatch(deployment_id) or not path.is_file():
            raise self._error(
                "ResourceNotFoundException", f"Deployment {deployment_id} not found", operation, 404
            )
        return json.loads(path.read_text())

    def _with_digests(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """The recipe with each S3 artifact's Digest and Algorithm computed from its bytes."""
        from edge.artifacts import sha256_file
        from edge.greengrass.component import greengrass_digest

        s3 = LocalS3Client(self.root, self.region)
        unreadable = []
        for manifest in recipe.get("Manifests") or []:
            for artifact in manifest.get("Artifacts") or []:
                uri = str(artifact.get("URI", ""))
                if not uri.startswith("s3://"):
                    continue  # greengrass: and docker: artifacts are not in S3
                try:
                    path = s3.uri_to_path(uri)
                except ValueError:
                    path = None
                inside = path is not None and path.resolve().is_relative_to(s3.base.resolve())
                if not inside or not path.is_file():  # no ../ out of the local S3 folder
                    unreadable.append(f"{uri} = {ARTIFACT_UNREADABLE}")
                    continue
                artifact.update(Digest=greengrass_digest(sha256_file(path)), Algorithm="SHA-256")
        if unreadable:
            raise self._error(
                "ValidationException",
                "Invalid Input: Encountered following errors in Artifacts: {" + ", ".join(unreadable) + "}",
                "CreateComponentVersion",
                400,
            )
        return recipe

    # -- components
    def create_component_version(self, **kwargs: Any) -> dict[str, Any]:
        check_params(kwargs, allowed=("inlineRecipe", "lambdaFunction", "tags", "clientToken"))
        if "inlineRecipe" not in kwargs:
            raise self._error(
                "ValidationException", "only inlineRecipe is supported locally", "CreateComponentVersion", 400
            )
        try:
            recipe = json.loads(kwargs["inlineRecipe"])
            name, version = recipe["ComponentName"], recipe["ComponentVersion"]
        except (ValueError, TypeError, KeyError) as exc:
            raise self._error(
                "ValidationException", f"Invalid Input: recipe: {exc}", "CreateComponentVersion", 400
            ) from None
        path = self.base / "components" / name / f"{version}.json"
        with file_lock(self.base / ".lock"):
            if path.exists():
                raise self._error(
                    "ConflictException",
                    f"Component {name} version {version} already exists",
                    "CreateComponentVersion",
                    409,
                )
            recipe = self._with_digests(recipe)
            atomic_write_json(path, {"recipe": recipe, "tags": kwargs.get("tags", {}), "created": _now()})
        return {
            "arn": self._arn(name, version),
            "componentName": name,
            "componentVersion": version,
            "creationTimestamp": now_utc(),
            "status": {"componentState": "DEPLOYABLE"},
            "ResponseMetadata": response_metadata(201),
        }

    # -- deployments
    def create_deployment(self, **kwargs: Any) -> dict[str, Any]:
        request_fields = ("deploymentName", "components", "iotJobConfiguration", "deploymentPolicies")
        check_params(
            kwargs,
            required=("targetArn",),
            allowed=(*request_fields, "parentTargetArn", "tags", "clientToken"),
        )
        target = kwargs["targetArn"]
        with file_lock(self.base / ".lock"):
            deployments = self._deployments()
            token = kwargs.get("clientToken")
            repeated = [d for d in deployments if token and d.get("clientToken") == token]
            if repeated:
                if repeated[0]["request"] != json.loads(json.dumps(kwargs, default=str)):
                    raise self._error(
                        "ConflictException",
                        f"clientToken {token} was used with other parameters",
                        "CreateDeployment",
                        409,
                    )
                return self._created(repeated[0])
            for previous in deployments:
                if previous["targetArn"] == target and previous["isLatestForTarget"]:
                    previous["isLatestForTarget"] = False
                    if previous["deploymentStatus"] == "ACTIVE":
                        previous["deploymentStatus"] = "INACTIVE"
                    atomic_write_json(self._deployment_path(previous["deploymentId"]), previous)
            deployment_id = f"local-{len(deployments) + 1:06d}"
            record = {
                **{
                    name: kwargs[name]
                    for name in (*request_fields, "parentTargetArn", "tags")
                    if name in kwargs
                },
                "targetArn": target,
                "deploymentId": deployment_id,
                "revisionId": str(1 + sum(d["targetArn"] == target for d in deployments)),
                "deploymentStatus": "ACTIVE",  # thing group deployments are continuous
                "isLatestForTarget": True,
                "iotJobId": deployment_id,
                "iotJobArn": f"arn:aws:iot:{self.region}:{self.account}:job/{deployment_id}",
                "creationTimestamp": to_iso(now_utc()),
                "clientToken": token,
                "request": kwargs,
            }
            atomic_write_json(self._deployment_path(deployment_id), record)
            atomic_write_json(self.base / "deployments" / f"latest-{target.rsplit('/', 1)[-1]}.json", record)
        return self._created(record)

    @staticmethod
    def _created(record: dict[str, Any]) -> dict[str, Any]:
        return {
            "deploymentId": record["deploymentId"],
            "iotJobId": record["iotJobId"],
            "iotJobArn": record["iotJobArn"],
            "ResponseMetadata": response_metadata(201),
        }

    def list_deployments(self, **kwargs: Any) -> dict[str, Any]:
        check_params(
            kwargs, allowed=("targetArn", "historyFilter", "parentTargetArn", "maxResults", "nextToken")
        )
        history = kwargs.get("historyFilter", "LATEST_ONLY")
        if history not in ("ALL", "LATEST_ONLY"):
            raise self._error(
                "ValidationException",
                f"1 validation error detected: Value '{history}' at 'historyFilter' failed to satisfy "
                "constraint: Member must satisfy enum value set: [ALL, LATEST_ONLY]",
                "ListDeployments",
                400,
            )
        with file_lock(self.base / ".lock"):
            deployments = self._deployments()
        chosen = [
            d
            for d in reversed(deployments)  # newest first
            if kwargs.get("targetArn") in (None, d["targetArn"])
            and kwargs.get("parentTargetArn") in (None, d.get("parentTargetArn"))
            and (history == "ALL" or d["isLatestForTarget"])
        ]
        paging = {
            "MaxResults": kwargs.get("maxResults", DEFAULT_LIST_RESULTS),
            "NextToken": kwargs.get("nextToken"),
        }
        page, token = page_items(chosen, paging, "ListDeployments")
        summary_fields = ("targetArn", "revisionId", "deploymentId", "deploymentName", "deploymentStatus")
        summaries = [
            {
                **{name: d[name] for name in summary_fields if d.get(name) is not None},
                **({"parentTargetArn": d["parentTargetArn"]} if d.get("parentTargetArn") else {}),
                "creationTimestamp": from_iso(d["creationTimestamp"]),
                "isLatestForTarget": d["isLatestForTarget"],
            }
            for d in page
        ]
        response: dict[str, Any] = {"deployments": summaries, "ResponseMetadata": response_metadata()}
        if token:
            response["nextToken"] = token
        return response

    def get_deployment(self, **kwargs: Any) -> dict[str, Any]:
        check_params(kwargs, required=("deploymentId",))
        record = self._read_deployment(kwargs["deploymentId"], "GetDeployment")
        response = {
            name: value
            for name, value in record.items()
            if name not in ("request", "clientToken") and value not in (None, {}, "")
        }
        response["creationTimestamp"] = from_iso(record["creationTimestamp"])
        response["ResponseMetadata"] = response_metadata()
        return response

    def cancel_deployment(self, **kwargs: Any) -> dict[str, Any]:
        check_params(kwargs, required=("deploymentId",))
        with file_lock(self.base / ".lock"):
            record = self._read_deployment(kwargs["deploymentId"], "CancelDeployment")
            if record["deploymentStatus"] != "ACTIVE":
                raise self._error(
                    "ConflictException",
                    f"Deployment {record['deploymentId']} is {record['deploymentStatus']}, not ACTIVE",
                    "CancelDeployment",
                    409,
                )
            record["deploymentStatus"] = "CANCELED"
            atomic_write_json(self._deployment_path(record["deploymentId"]), record)
            if record["isLatestForTarget"]:
                group = record["targetArn"].rsplit("/", 1)[-1]
                atomic_write_json(self.base / "deployments" / f"latest-{group}.json", record)
        return {
            "message": f"Deployment {record['deploymentId']} canceled",
            "ResponseMetadata": response_metadata(),
        }
