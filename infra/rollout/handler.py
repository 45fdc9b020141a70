"""The rollout function: an approved model package -> a Greengrass v2 component version -> a deployment.

EventBridge's "approved" rule (``pipelines.events.approved_pattern``) invokes ``handler`` with the
``SageMaker Model Package State Change`` event. The function re-reads the package (the approval may
have been revoked since the event), renders the component recipe with the device package's own builder
(``edge.greengrass.component``: the car's artifact and SHA-256 from the registry, as the agent reads
them), creates that component version and deploys it to the cars' thing group.

A deployment replaces the target's previous one: "If the new deployment doesn't define a component that
the previous deployment defines, the AWS IoT Greengrass Core software removes that component from the
target core devices" (https://docs.aws.amazon.com/greengrass/v2/developerguide/revise-deployments.html).
So the deployment revises the group's latest one (ListDeployments ``LATEST_ONLY``, then GetDeployment):
every other component keeps its version, configuration update and runWith, the deployment keeps its
policies, IoT job configuration and tags, and only this component's version and configuration change.
The latest deployment is revised whatever its status: a cancelled one still runs on the cars that got it
(https://docs.aws.amazon.com/greengrass/v2/developerguide/cancel-deployments.html) and a failed one is
what a person last asked the group to run; dropping their components would uninstall them.

Delivery is at least once and a package changes state more than once, so every step is idempotent: the
component version is derived from the package version (a second create is a conflict, treated as done),
and when the group's latest deployment is ACTIVE or COMPLETED and already runs this version with this
configuration, no deployment is created. Two deliveries racing each other send the same ``clientToken``
(derived from the deployment revised and the request), which Greengrass answers with the first one's
deployment (https://docs.aws.amazon.com/greengrass/v2/APIReference/API_CreateDeployment.html).

One function serves every recipe. The pilot's "approved" rule passes SageMaker's event as it is: the
pilot's group, component and thing group (``MODEL_PACKAGE_GROUP``, ``COMPONENT_NAME``,
``THING_GROUP_ARN``). The classifier's rule passes ``{"recipe": "classifier", "region": ..., "detail":
...}`` through its target's input transformer: the ``CLASSIFIER_*`` variables, so an approved classifier
goes to the classifier's cars as its own component; the detector's rule the same with ``"detection"`` and
the ``DETECTION_*`` variables. A car (in one of the recipes' groups) runs one model.

Runs in Lambda (``handler.handler``, Python 3.12, boto3 from the runtime; the recipe template travels
as JSON because the runtime has no PyYAML) and locally, where ``robocar trigger`` passes local clients
to ``rollout``. Zip layout (``pipelines.infra.rollout_zip``): this file and the template at the root,
``edge/``. Standard library only at import.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.greengrass import component

log = logging.getLogger("robocar.rollout")
log.setLevel(logging.INFO)

BUNDLED_TEMPLATE = Path(__file__).with_name("recipe_template.json")  # written into the zip only
# The policies of the group's first deployment; a revision keeps the ones a person set on the group.
DEPLOYMENT_POLICIES = {
    # a car that fails to start the new component goes back to the previous deployment
    "failureHandlingPolicy": "ROLLBACK",
    # do not yank the model while the car is driving: components may defer the update
    "componentUpdatePolicy": {"timeoutInSeconds": 120, "action": "NOTIFY_COMPONENTS"},
}
MODEL_PACKAGE_TAG = "robocar:model-package"
TAG_VALUE_MAX = 256  # TagValue's max length in botocore's greengrassv2 model
CLIENT_TOKEN_MAX = 64  # ClientTokenString: 1-64 characters of [a-zA-Z0-9-]
# A deployment in these states is (being) applied to the group; CANCELED or FAILED ones are not, so a
# package whose version they carry is deployed again.
APPLIED_STATUSES = frozenset({"ACTIVE", "COMPLETED"})
MAX_LIST_PAGES = 100  # LATEST_ONLY for one target holds one deployment; this only bounds a broken paginator


# The environment variables of each recipe's configuration (infra/template.yaml, RolloutFunction).
ENVIRONMENT_PREFIXES = {"pilot": "", "classifier": "CLASSIFIER_", "detection": "DETECTION_"}


class RolloutError(RuntimeError):
    """The event or the package cannot be rolled out; the message says why."""


@dataclass(frozen=True)
class RolloutConfig:
    model_package_group: str
    component_name: str
    edge_target: str
    thing_group_arn: str

    @classmethod
    def from_env(cls, env: Mapping[str, str], recipe: str = "pilot") -> RolloutConfig:
        """The recipe's configuration; the cars' edge target is one for every recipe (``EDGE_TARGET``)."""
        own = ENVIRONMENT_PREFIXES[recipe]
        names = {
            "model_package_group": f"{own}MODEL_PACKAGE_GROUP",
            "component_name": f"{own}COMPONENT_NAME",
            "edge_target": "EDGE_TARGET",
            "thing_group_arn": f"{own}THING_GROUP_ARN",
        }
        missing = [variable for variable in names.values() if not env.get(variable)]
        if missing:
            raise RolloutError(f"missing environment variable(s): {', '.join(missing)}")
        return cls(**{field: env[variable] for field, variable in names.items()})


def event_recipe(event: Mapping[str, Any]) -> str:
    """The recipe the event is for: the input transformer's ``recipe``, else the pilot."""
    recipe = event.get("recipe", "pilot")
    if recipe not in ENVIRONMENT_PREFIXES:
        raise RolloutError(
            f"the event names recipe {recipe!r}; this function serves {', '.join(ENVIRONMENT_PREFIXES)}"
        )
    return recipe


def recipe_template() -> dict[str, Any]:
    """The recipe template: bundled JSON in Lambda, else ``edge/greengrass/recipe.yaml`` itself."""
    if BUNDLED_TEMPLATE.is_file():
        return json.loads(BUNDLED_TEMPLATE.read_text())
    return component.load_template()


def deployment_name(config: RolloutConfig, version: str) -> str:
    return f"{config.component_name}-{version}"


# ---------------------------------------------------------------- the group's current deployment
def latest_deployment(greengrass: Any, target_arn: str) -> dict[str, Any] | None:
    """The target's latest deployment (GetDeployment's answer), or None when it has never had one.

    ListDeployments with ``LATEST_ONLY`` lists the latest revision; subdeployments (``parentTargetArn``)
    and other targets are not the group's own deployment.
    """
    summaries: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"targetArn": target_arn, "historyFilter": "LATEST_ONLY"}
    for _ in range(MAX_LIST_PAGES):
        page = greengrass.list_deployments(**kwargs)
        summaries += [
            summary
            for summary in page.get("deployments") or []
            if summary.get("targetArn") == target_arn and not summary.get("parentTargetArn")
        ]
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    if not summaries:
        return None
    newest = max(
        summaries, key=lambda s: (bool(s.get("isLatestForTarget")), _epoch(s.get("creationTimestamp")))
    )
    return greengrass.get_deployment(deploymentId=newest["deploymentId"])


def _epoch(value: Any) -> float:
    """A creation timestamp as seconds: boto3 gives datetimes, other clients numbers or ISO strings."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value).timestamp()
    return 0.0


# ---------------------------------------------------------------- the revised deployment
def our_configuration_update(previous: Mapping[str, Any] | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """This component's configuration update: the previous deployment's, with ``values`` merged on top.

    A person's keys (an MQTT host, a camera source) stay, so a car joining the group later gets them too;
    the previous ``reset`` paths stay (they run before the merge, so they never undo ``values``).
    """
    update = copy.deepcopy(dict(previous or {}))
    merged = json.loads(update.get("merge") or "{}")
    if not isinstance(merged, dict):
        raise RolloutError(f"the group's deployment merges a non-object configuration: {update['merge']!r}")
    merged.update(values)
    update["merge"] = json.dumps(merged, sort_keys=True, separators=(",", ":"))
    return update


def revised_components(
    current: Mapping[str, Any] | None, name: str, version: str, values: Mapping[str, Any]
) -> dict[str, Any]:
    """Every component of ``current`` as it is, and ours at ``version`` with ``values`` merged."""
    components = copy.deepcopy(dict((current or {}).get("components") or {}))
    previous = components.get(name) or {}
    ours: dict[str, Any] = {"componentVersion": version}
    ours["configurationUpdate"] = our_configuration_update(previous.get("configurationUpdate"), values)
    if previous.get("runWith"):
        ours["runWith"] = previous["runWith"]
    components[name] = ours
    return components


def deployment_request(
    current: Mapping[str, Any] | None,
    config: RolloutConfig,
    version: str,
    values: Mapping[str, Any],
    package_arn: str,
) -> dict[str, Any]:
    """The CreateDeployment arguments: ``current`` revised (create-deployments.html lists what to copy)."""
    current = current or {}
    request: dict[str, Any] = {
        "targetArn": config.thing_group_arn,
        "deploymentName": deployment_name(config, version),
        "components": revised_components(current, config.component_name, version, values),
        "deploymentPolicies": copy.deepcopy(current.get("deploymentPolicies") or DEPLOYMENT_POLICIES),
        "tags": {**user_tags(current.get("tags")), MODEL_PACKAGE_TAG: package_arn[-TAG_VALUE_MAX:]},
    }
    if current.get("iotJobConfiguration"):
        request["iotJobConfiguration"] = copy.deepcopy(current["iotJobConfiguration"])
    request["clientToken"] = client_token(current.get("deploymentId"), request)
    return request


def user_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """The tags a request may carry again: the ``aws:`` prefix is reserved for AWS's own
    (https://docs.aws.amazon.com/general/latest/gr/aws_tagging.html#tag-conventions, linked from
    https://docs.aws.amazon.com/greengrass/v2/developerguide/tag-resources.html)."""
    return {key: value for key, value in (tags or {}).items() if not key.lower().startswith("aws:")}


def client_token(revised_deployment_id: str | None, request: Mapping[str, Any]) -> str:
    """Same revision of the same deployment -> same token, so racing deliveries create one deployment."""
    canonical = json.dumps([revised_deployment_id, request], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:CLIENT_TOKEN_MAX]


def runs_already(
    current: Mapping[str, Any] | None, name: str, version: str, values: Mapping[str, Any]
) -> bool:
    """The group's deployment is applied and already carries this version with these values."""
    if not current or current.get("deploymentStatus") not in APPLIED_STATUSES:
        return False
    ours = (current.get("components") or {}).get(name) or {}
    merged = json.loads((ours.get("configurationUpdate") or {}).get("merge") or "{}")
    if ours.get("componentVersion") != version or not isinstance(merged, dict):
        return False
    return all(merged.get(key) == value for key, value in values.items())


# ---------------------------------------------------------------- the function
def rollout(
    event: Mapping[str, Any], *, sagemaker: Any, greengrass: Any, config: RolloutConfig
) -> dict[str, Any]:
    """Do the rollout for one event; returns what was done (``status``: deployed or skipped)."""
    detail = event.get("detail") or {}
    arn = detail.get("ModelPackageArn")
    region = event.get("region")
    if not arn:
        raise RolloutError("event has no detail.ModelPackageArn: not a SageMaker Model Package State Change")
    if detail.get("ModelPackageGroupName") != config.model_package_group:
        return {"status": "skipped", "reason": f"group {detail.get('ModelPackageGroupName')!r} is not ours"}
    description = sagemaker.describe_model_package(ModelPackageName=arn)
    if description.get("ModelApprovalStatus") != "Approved":  # revoked between the event and now
        return {"status": "skipped", "reason": f"{arn} is {description.get('ModelApprovalStatus')} now"}
    try:
        recipe = component.render_recipe(
            recipe_template(), description, config.edge_target, component_name=config.component_name
        )
    except component.ComponentError as exc:
        raise RolloutError(f"{exc}: it cannot be rolled out to these cars") from exc
    version = recipe["ComponentVersion"]
    created = create_component_version(greengrass, component.component_request(recipe, arn))
    values = component.version_configuration(recipe)
    if region:  # the cars talk to the registry of the region the package lives in
        values["Region"] = region
    current = latest_deployment(greengrass, config.thing_group_arn)
    result = {
        "status": "deployed",
        "modelPackageArn": arn,
        "componentName": config.component_name,
        "componentVersion": version,
        "componentCreated": created,
        "targetArn": config.thing_group_arn,
        "revisedDeploymentId": current.get("deploymentId") if current else None,
        "keptComponents": sorted(set((current or {}).get("components") or {}) - {config.component_name}),
    }
    if runs_already(current, config.component_name, version, values):
        result.update(deploymentId=current["deploymentId"], deploymentCreated=False)
    else:
        if current and current.get("deploymentStatus") not in APPLIED_STATUSES:
            log.warning(
                "revising the group's %s deployment %s",
                current.get("deploymentStatus"),
                current.get("deploymentId"),
            )
        request = deployment_request(current, config, version, values, arn)
        deployment = greengrass.create_deployment(**request)
        result.update(deploymentId=deployment.get("deploymentId"), deploymentCreated=True)
    log.info(json.dumps(result))
    return result


def create_component_version(greengrass: Any, request: Mapping[str, Any]) -> bool:
    """Create the version; False when it already exists (a redelivered event), True when created now."""
    try:
        greengrass.create_component_version(**request)
    except greengrass.exceptions.ConflictException:
        log.info("component version exists already: %s", request.get("tags"))
        return False
    except greengrass.exceptions.ValidationException as exc:  # e.g. the artifact cannot be read
        raise RolloutError(f"Greengrass refused the component version: {_message(exc)}") from exc
    return True


def _message(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return (response.get("Error") or {}).get("Message") or str(exc)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point: boto3 clients and configuration from the function's environment."""
    import boto3

    return rollout(
        event,
        sagemaker=boto3.client("sagemaker"),
        greengrass=boto3.client("greengrassv2"),
        config=RolloutConfig.from_env(os.environ, event_recipe(event)),
    )
