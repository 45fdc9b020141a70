"""The rollout function: an approved model package -> a Greengrass v2 component version -> a deployment.

EventBridge's "approved" rule (``pipelines.events.approved_pattern``) invokes ``handler`` with the
``SageMaker Model Package State Change`` event. The function re-reads the package (the approval may
have been revoked since the event), renders the component recipe with the device package's own builder
(``edge.greengrass.component``: the car's artifact and SHA-256 from the registry, as the agent reads
them), creates that component version and deploys it to the cars' thing group.

Delivery is at least once and a package changes state more than once, so every step is idempotent:
the component version is derived from the package version (a second create is a conflict, treated as
done) and so is the deployment name (redeploying the same version changes nothing on a car).

Runs in Lambda (``handler.handler``, Python 3.12, boto3 from the runtime; the recipe template travels
as JSON because the runtime has no PyYAML) and locally, where ``robocar trigger`` passes local clients
to ``rollout``. Zip layout (``pipelines.infra.rollout_zip``): this file and the template at the root,
``edge/``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.greengrass import component

log = logging.getLogger("robocar.rollout")
log.setLevel(logging.INFO)

BUNDLED_TEMPLATE = Path(__file__).with_name("recipe_template.json")  # written into the zip only
DEPLOYMENT_POLICIES = {
    # a car that fails to start the new component goes back to the previous deployment
    "failureHandlingPolicy": "ROLLBACK",
    # do not yank the model while the car is driving: components may defer the update
    "componentUpdatePolicy": {"timeoutInSeconds": 120, "action": "NOTIFY_COMPONENTS"},
}


class RolloutError(RuntimeError):
    """The event or the package cannot be rolled out; the message says why."""


@dataclass(frozen=True)
class RolloutConfig:
    model_package_group: str
    component_name: str
    edge_target: str
    thing_group_arn: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RolloutConfig:
        names = {
            "model_package_group": "MODEL_PACKAGE_GROUP",
            "component_name": "COMPONENT_NAME",
            "edge_target": "EDGE_TARGET",
            "thing_group_arn": "THING_GROUP_ARN",
        }
        missing = [variable for variable in names.values() if not env.get(variable)]
        if missing:
            raise RolloutError(f"missing environment variable(s): {', '.join(missing)}")
        return cls(**{field: env[variable] for field, variable in names.items()})


def recipe_template() -> dict[str, Any]:
    """The recipe template: bundled JSON in Lambda, else ``edge/greengrass/recipe.yaml`` itself."""
    if BUNDLED_TEMPLATE.is_file():
        return json.loads(BUNDLED_TEMPLATE.read_text())
    return component.load_template()


def deployment_name(config: RolloutConfig, version: str) -> str:
    return f"{config.component_name}-{version}"


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
    deployed_component: dict[str, Any] = {"componentVersion": version}
    if region:  # the cars talk to the registry of the region the package lives in
        deployed_component["configurationUpdate"] = {"merge": json.dumps({"Region": region})}
    deployment = greengrass.create_deployment(
        targetArn=config.thing_group_arn,
        deploymentName=deployment_name(config, version),
        components={config.component_name: deployed_component},
        deploymentPolicies=DEPLOYMENT_POLICIES,
        tags={"robocar:model-package": arn[-256:]},
    )
    result = {
        "status": "deployed",
        "modelPackageArn": arn,
        "componentName": config.component_name,
        "componentVersion": version,
        "componentCreated": created,
        "deploymentId": deployment.get("deploymentId"),
        "targetArn": config.thing_group_arn,
    }
    log.info(json.dumps(result))
    return result


def create_component_version(greengrass: Any, request: Mapping[str, Any]) -> bool:
    """Create the version; False when it already exists (a redelivered event), True when created now."""
    try:
        greengrass.create_component_version(**request)
    except greengrass.exceptions.ConflictException:
        log.info("component version exists already: %s", request.get("tags"))
        return False
    return True


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point: boto3 clients and configuration from the function's environment."""
    import boto3

    return rollout(
        event,
        sagemaker=boto3.client("sagemaker"),
        greengrass=boto3.client("greengrassv2"),
        config=RolloutConfig.from_env(os.environ),
    )
