"""The rollout function: an approved model package -> a Greengrass v2 component version -> a deployment.

EventBridge's "approved" rule (``pipelines.events.approved_pattern``) invokes ``handler`` with the
``SageMaker Model Package State Change`` event. The function re-reads the package (the approval may
have been revoked since the event), takes the car's artifact and its SHA-256 from the registry exactly
as the device agent does (``edge.agent.candidate_from_package``), creates the component version whose
recipe pins that package, and deploys it to the cars' thing group.

Delivery is at least once and a package changes state more than once, so every step is idempotent:
the component version is the package version (a second create is a conflict, treated as done) and the
deployment name is derived from it (a repeated deployment of the same version changes nothing on a car).

Runs in Lambda (``handler.handler``, Python 3.12, boto3 from the runtime) and locally, where
``robocar trigger`` passes local clients to ``rollout``. Zip layout: this file at the root, ``edge/``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.agent import candidate_from_package

log = logging.getLogger("robocar.rollout")
log.setLevel(logging.INFO)

RECIPE_FORMAT = "2020-01-25"
DEPLOYMENT_POLICIES = {
    # a car that fails to start the new component goes back to the previous deployment
    "failureHandlingPolicy": "ROLLBACK",
    # do not yank the model while the car is driving: components may defer the update (DEFER_COMPONENT_UPDATE)
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


def component_version(package_version: int) -> str:
    """Greengrass wants semantic versions; the package version is the patch number (1.0.7 = package 7)."""
    return f"1.0.{int(package_version)}"


def deployment_name(config: RolloutConfig, version: str) -> str:
    return f"{config.component_name}-{version}"


def component_recipe(description: Mapping[str, Any], config: RolloutConfig) -> dict[str, Any]:
    """The component version for one approved package: the device agent, pinned to its artifact.

    The car runs ``robocar edge`` (installed on the device by its own component/image); the recipe's
    configuration tells it which package and which artifact SHA-256 to install, and the artifact itself
    is listed so Greengrass downloads and checks it too.
    """
    candidate = candidate_from_package(dict(description), config.edge_target)
    if candidate is None:
        raise RolloutError(
            f"{description['ModelPackageArn']} has no artifact for target {config.edge_target!r}; "
            "it cannot be rolled out to these cars"
        )
    version = component_version(candidate.version)
    return {
        "RecipeFormatVersion": RECIPE_FORMAT,
        "ComponentName": config.component_name,
        "ComponentVersion": version,
        "ComponentDescription": f"robocar pilot {candidate.model_package_arn} for {candidate.target}",
        "ComponentPublisher": "robocar-pipeline",
        "ComponentConfiguration": {
            "DefaultConfiguration": {
                "ModelPackageGroupName": config.model_package_group,
                "ModelPackageArn": candidate.model_package_arn,
                "EdgeTarget": candidate.target,
                "ArtifactSha256": candidate.sha256,
            }
        },
        "Manifests": [
            {
                "Platform": {"os": "linux"},
                "Artifacts": [{"URI": candidate.artifact_uri, "Unarchive": "NONE"}],
                "Lifecycle": {
                    "Run": (
                        "robocar edge check --group {configuration:/ModelPackageGroupName} "
                        "--target {configuration:/EdgeTarget} "
                        "--artifact {artifacts:path}/" + candidate.artifact_uri.rsplit("/", 1)[-1]
                    )
                },
            }
        ],
    }


def rollout(
    event: Mapping[str, Any], *, sagemaker: Any, greengrass: Any, config: RolloutConfig
) -> dict[str, Any]:
    """Do the rollout for one event; returns what was done (``status``: deployed or skipped)."""
    detail = event.get("detail") or {}
    arn = detail.get("ModelPackageArn")
    if not arn:
        raise RolloutError("event has no detail.ModelPackageArn: not a SageMaker Model Package State Change")
    if detail.get("ModelPackageGroupName") != config.model_package_group:
        return {"status": "skipped", "reason": f"group {detail.get('ModelPackageGroupName')!r} is not ours"}
    description = sagemaker.describe_model_package(ModelPackageName=arn)
    if description.get("ModelApprovalStatus") != "Approved":  # revoked between the event and now
        return {"status": "skipped", "reason": f"{arn} is {description.get('ModelApprovalStatus')} now"}
    recipe = component_recipe(description, config)
    version = recipe["ComponentVersion"]
    created = create_component_version(greengrass, recipe)
    deployment = greengrass.create_deployment(
        targetArn=config.thing_group_arn,
        deploymentName=deployment_name(config, version),
        components={config.component_name: {"componentVersion": version}},
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


def create_component_version(greengrass: Any, recipe: Mapping[str, Any]) -> bool:
    """Create the version; False when it already exists (a redelivered event), True when created now."""
    try:
        greengrass.create_component_version(inlineRecipe=json.dumps(recipe, sort_keys=True).encode())
    except greengrass.exceptions.ConflictException:
        log.info("component %s %s exists already", recipe["ComponentName"], recipe["ComponentVersion"])
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
