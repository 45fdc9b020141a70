"""A registered model package behind a SageMaker endpoint: deploy, describe, invoke, delete (on AWS).

Deploying is three resources, each named by what it holds, so a rerun finds them and does nothing:

- the **model**: ``CreateModel`` with ``Containers=[{"ModelPackageName": arn}]``, which takes image, model
  data and environment from the package's inference specification (only an Approved package of a
  versioned group may be deployed: ``ModelApprovalStatus`` in
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackage.html);
- the **endpoint configuration**: one production variant (instance type and count), and for ``--async``
  the ``AsyncInferenceConfig`` (S3 output and failure paths, concurrency per instance, SNS topics);
- the **endpoint**: ``CreateEndpoint`` the first time, ``UpdateEndpoint`` to a new configuration after.
  An update is a blue/green deployment by default (a new fleet is provisioned, traffic shifts all at
  once, the old fleet is terminated after the baking period), so a new package replaces the old without
  downtime: https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green.html
  If the update fails, SageMaker rolls back to the old configuration; ``deploy`` reports that failure
  with the endpoint's ``FailureReason``.

The model and configuration names end in a digest of their content (``<endpoint>-<12 hex>``): the same
package and settings give the same names (nothing is created again), a new package or setting gives new
ones (a new configuration, and an update).

An asynchronous endpoint scales to zero instances when idle, as
https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-autoscale.html documents: the variant is
registered with Application Auto Scaling (``sagemaker:variant:DesiredInstanceCount``, MinCapacity 0), a
target-tracking policy follows ``ApproximateBacklogSizePerInstance``, and since target tracking cannot
scale up from zero instances, a step-scaling policy adds one instance when the CloudWatch alarm on
``HasBacklogWithoutCapacity`` fires.

Every request is checked against botocore's model before it is sent (``pipelines.aws_rules.validated``):
what AWS would refuse (a name over 63 characters, a path that is not ``s3://``) fails here, first.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from edge import registry as package_registry
from pipelines import aws_rules

VARIANT_NAME = "AllTraffic"  # the SageMaker SDK's name for an endpoint's single variant
# EndpointName, EndpointConfigName: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}; ModelName:
# [a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?; all at most 63 characters (botocore's sagemaker model).
NAME_MAX = 63
DIGEST_CHARS = 12  # 48 bits of SHA-256: a collision among one endpoint's few versions is negligible
NAME_BASE_MAX = NAME_MAX - 1 - DIGEST_CHARS  # "<base>-<digest>" within 63
ASYNC_SUFFIX = "-async"

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC_NAMESPACE = "AWS/SageMaker"
BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"
NO_CAPACITY_METRIC = "HasBacklogWithoutCapacity"
TARGET_TRACKING_POLICY = f"{BACKLOG_METRIC}-target-tracking"
STEP_SCALING_POLICY = f"{NO_CAPACITY_METRIC}-step-scaling"
# The values of the async-inference-autoscale page's examples: a backlog of 5 requests per instance,
# scale in after 600 s and out after 300 s; the alarm fires on 2 of 2 one-minute periods with
# HasBacklogWithoutCapacity >= 1, and the step policy then adds 1 instance (cooldown 300 s).
DEFAULT_BACKLOG_PER_INSTANCE = 5.0
SCALE_IN_COOLDOWN_S = 600
SCALE_OUT_COOLDOWN_S = 300
STEP_COOLDOWN_S = 300
ALARM_PERIOD_S = 60
ALARM_EVALUATION_PERIODS = 2

# A deploy waits for the endpoint by botocore's waiter (DescribeEndpoint every 30 s, 120 times: one
# hour, which covers provisioning a fleet and a blue/green update's baking period).
WAITER = "endpoint_in_service"
IN_SERVICE = "InService"
# DescribeEndpoint's statuses that end by themselves (in InService or Failed); the others
# (OutOfService, Deleting, UpdateRollbackFailed) need a person: deploy refuses them with the reason.
IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack")

CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".json": "application/json",
    ".csv": "text/csv",
    ".npy": "application/x-npy",
}


class EndpointError(ValueError):
    """An endpoint that did not come up, or a request that cannot be served: the message says why (with
    SageMaker's FailureReason) and what to do. A ValueError: the CLI prints it as one line (exit 2)."""


@dataclass(frozen=True)
class AsyncOptions:
    """An asynchronous endpoint's results, concurrency, notifications and scaling (min 0: to zero)."""

    output_path: str
    failure_path: str | None = None
    max_concurrent_invocations: int | None = None
    success_topic: str | None = None
    error_topic: str | None = None
    min_capacity: int = 0
    max_capacity: int = 1
    backlog_per_instance: float = DEFAULT_BACKLOG_PER_INSTANCE


@dataclass(frozen=True)
class EndpointPlan:
    """What to deploy: a model package on an endpoint, real-time or (with ``async_options``) async."""

    endpoint_name: str
    model_package_arn: str
    role_arn: str
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    async_options: AsyncOptions | None = None


@dataclass(frozen=True)
class EndpointClients:
    """The clients an endpoint needs, each checking its requests against botocore's model."""

    sagemaker: Any
    runtime: Any = None
    autoscaling: Any = None
    cloudwatch: Any = None
    s3: Any = None


@dataclass
class DeployResult:
    endpoint_name: str
    action: str  # "created", "updated" or "unchanged"
    model_name: str
    config_name: str
    created: list[str] = field(default_factory=list)  # "model NAME", "endpoint-config NAME"
    status: dict[str, Any] = field(default_factory=dict)


def aws_endpoint_clients(region: str | None, endpoint_url: str | None = None) -> EndpointClients:
    """boto3's clients for ``region`` (or a moto server's ``endpoint_url``), each one validated."""
    import boto3

    session = boto3.session.Session(region_name=region) if region else boto3.session.Session()

    def client(service: str) -> Any:
        return aws_rules.validated(session.client(service, endpoint_url=endpoint_url), service)

    return EndpointClients(
        sagemaker=client("sagemaker"),
        runtime=client("sagemaker-runtime"),
        autoscaling=client("application-autoscaling"),
        cloudwatch=client("cloudwatch"),
        s3=client("s3"),
    )


# ---------------------------------------------------------------- names
def _name_part(text: str, limit: int) -> str:
    """``text`` as a SageMaker name part: runs of other characters become '-', at most ``limit``."""
    cleaned = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")[:limit].rstrip("-")
    if not cleaned:
        raise ValueError(f"no endpoint name can be made of {text!r}: give --name")
    return cleaned


def default_endpoint_name(group: str, *, asynchronous: bool = False) -> str:
    """The endpoint of a model package group: the group's name (``-async`` for the async one)."""
    suffix = ASYNC_SUFFIX if asynchronous else ""
    return _name_part(group, NAME_MAX - len(suffix)) + suffix


def endpoint_name_problem(name: str) -> str | None:
    problems = aws_rules.request_problems(
        "sagemaker", "CreateEndpoint", {"EndpointName": name, "EndpointConfigName": "x"}
    )
    return "; ".join(problems) or None


def content_digest(document: Mapping[str, Any]) -> str:
    """The first 12 hex digits of the SHA-256 of ``document`` as canonical JSON."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def versioned_name(endpoint_name: str, document: Mapping[str, Any]) -> str:
    return f"{_name_part(endpoint_name, NAME_BASE_MAX)}-{content_digest(document)}"


def is_versioned_name_of(endpoint_name: str, name: str) -> bool:
    """Whether ``name`` is one of ``endpoint_name``'s models or configurations (``versioned_name``)."""
    base = re.escape(_name_part(endpoint_name, NAME_BASE_MAX))
    return re.fullmatch(rf"{base}-[0-9a-f]{{{DIGEST_CHARS}}}", name) is not None


# ---------------------------------------------------------------- requests
def model_request(plan: EndpointPlan) -> dict[str, Any]:
    body = {"Containers": [{"ModelPackageName": plan.model_package_arn}], "ExecutionRoleArn": plan.role_arn}
    return {"ModelName": versioned_name(plan.endpoint_name, body), **body}


def async_inference_config(options: AsyncOptions) -> dict[str, Any]:
    """CreateEndpointConfig's AsyncInferenceConfig (API_AsyncInferenceConfig: only what is given)."""
    output: dict[str, Any] = {"S3OutputPath": options.output_path}
    if options.failure_path:
        output["S3FailurePath"] = options.failure_path
    topics = {"SuccessTopic": options.success_topic, "ErrorTopic": options.error_topic}
    if any(topics.values()):
        output["NotificationConfig"] = {key: value for key, value in topics.items() if value}
    config: dict[str, Any] = {"OutputConfig": output}
    if options.max_concurrent_invocations is not None:
        config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": options.max_concurrent_invocations}
    return config


def endpoint_config_request(plan: EndpointPlan, model_name: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ProductionVariants": [
            {
                "VariantName": VARIANT_NAME,
                "ModelName": model_name,
                "InstanceType": plan.instance_type,
                "InitialInstanceCount": plan.instance_count,
            }
        ]
    }
    if plan.async_options is not None:
        body["AsyncInferenceConfig"] = async_inference_config(plan.async_options)
    return {"EndpointConfigName": versioned_name(plan.endpoint_name, body), **body}


def scaling_resource_id(endpoint_name: str) -> str:
    return f"endpoint/{endpoint_name}/variant/{VARIANT_NAME}"


def _scaling_target(endpoint_name: str) -> dict[str, str]:
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": scaling_resource_id(endpoint_name),
        "ScalableDimension": SCALABLE_DIMENSION,
    }


def scalable_target_request(endpoint_name: str, options: AsyncOptions) -> dict[str, Any]:
    return {
        **_scaling_target(endpoint_name),
        "MinCapacity": options.min_capacity,
        "MaxCapacity": options.max_capacity,
    }


def target_tracking_policy_request(endpoint_name: str, options: AsyncOptions) -> dict[str, Any]:
    """The backlog per instance held at ``backlog_per_instance`` (a customized metric: SageMaker
    publishes it per endpoint, not per variant)."""
    return {
        "PolicyName": TARGET_TRACKING_POLICY,
        **_scaling_target(endpoint_name),
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": options.backlog_per_instance,
            "CustomizedMetricSpecification": {
                "MetricName": BACKLOG_METRIC,
                "Namespace": METRIC_NAMESPACE,
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
                "Statistic": "Average",
            },
            "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
            "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
        },
    }


def step_scaling_policy_request(endpoint_name: str) -> dict[str, Any]:
    """One more instance whenever the alarm's metric is at or above its threshold: 0 -> 1."""
    return {
        "PolicyName": STEP_SCALING_POLICY,
        **_scaling_target(endpoint_name),
        "PolicyType": "StepScaling",
        "StepScalingPolicyConfiguration": {
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": STEP_COOLDOWN_S,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
        },
    }


def backlog_alarm_name(endpoint_name: str) -> str:
    return f"{endpoint_name}-{NO_CAPACITY_METRIC}"


def backlog_alarm_request(endpoint_name: str, step_policy_arn: str) -> dict[str, Any]:
    return {
        "AlarmName": backlog_alarm_name(endpoint_name),
        "MetricName": NO_CAPACITY_METRIC,
        "Namespace": METRIC_NAMESPACE,
        "Statistic": "Average",
        "EvaluationPeriods": ALARM_EVALUATION_PERIODS,
        "DatapointsToAlarm": ALARM_EVALUATION_PERIODS,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint_name}],
        "Period": ALARM_PERIOD_S,
        "AlarmActions": [step_policy_arn],
    }


# ---------------------------------------------------------------- the registry
def resolve_package_arn(sagemaker: Any, group: str, reference: str) -> str:
    """A model package ARN as given, or ``approved`` (the group's newest Approved package, what a car
    installs: ``edge.registry``) or ``latest`` (its newest, whatever its status)."""
    if reference not in ("approved", "latest"):
        return reference
    status = package_registry.APPROVED if reference == "approved" else None
    package = package_registry.newest(sagemaker, group, status)
    if package is None:
        qualifier = " Approved" if status else ""
        raise ValueError(f"no{qualifier} model package in group {group}")
    return str(package["ModelPackageArn"])


def approved_package(sagemaker: Any, arn: str) -> dict[str, Any]:
    """The package's description; an EndpointError unless it is Approved (SageMaker deploys only those)."""
    package = sagemaker.describe_model_package(ModelPackageName=arn)
    status = package.get("ModelApprovalStatus")
    if status != package_registry.APPROVED:
        raise EndpointError(
            f"{arn} is {status}, and only an Approved package can be deployed "
            "(robocar registry approve ARN, or deploy 'approved')"
        )
    return dict(package)


# ---------------------------------------------------------------- deploy
def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


def _is_missing(exc: BaseException) -> bool:
    """SageMaker answers a Describe/Delete of a missing model, configuration or endpoint with
    ValidationException "Could not find ..."; Application Auto Scaling with ObjectNotFoundException."""
    code = _error_code(exc)
    return (code == "ValidationException" and "Could not find" in str(exc)) or code in (
        "ObjectNotFoundException",
        "ResourceNotFound",
        "ResourceNotFoundException",
    )


def _describe(method: Any, **request: Any) -> dict[str, Any] | None:
    try:
        return dict(method(**request))
    except Exception as exc:
        if _is_missing(exc):
            return None
        raise


def describe_endpoint(sagemaker: Any, name: str) -> dict[str, Any] | None:
    return _describe(sagemaker.describe_endpoint, EndpointName=name)


def _failure(endpoint: Mapping[str, Any], doing: str) -> EndpointError:
    reason = endpoint.get("FailureReason") or "SageMaker gave no FailureReason"
    return EndpointError(
        f"endpoint {endpoint['EndpointName']} {doing}: {endpoint.get('EndpointStatus')}: {reason}"
    )


def wait_in_service(
    sagemaker: Any, name: str, waiter_config: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Wait for InService (botocore's waiter); a failed endpoint is an EndpointError with its reason."""
    from botocore.exceptions import WaiterError

    try:
        sagemaker.get_waiter(WAITER).wait(EndpointName=name, WaiterConfig=dict(waiter_config or {}))
    except WaiterError as exc:
        endpoint = describe_endpoint(sagemaker, name) or {"EndpointName": name}
        endpoint.setdefault("FailureReason", str(exc))
        raise _failure(endpoint, "did not come into service") from None
    return describe_endpoint(sagemaker, name) or {}


def _create_if_missing(describe: Any, create: Any, request: dict[str, Any], key: str) -> bool:
    if _describe(describe, **{key: request[key]}) is not None:
        return False
    create(**request)
    return True


def _scaling_registered(autoscaling: Any, endpoint_name: str) -> bool:
    target = _scaling_target(endpoint_name)
    found = autoscaling.describe_scalable_targets(
        ServiceNamespace=target["ServiceNamespace"],
        ResourceIds=[target["ResourceId"]],
        ScalableDimension=target["ScalableDimension"],
    )
    return bool(found.get("ScalableTargets"))


def _current_instance_type(sagemaker: Any, endpoint: Mapping[str, Any]) -> str | None:
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variants = config.get("ProductionVariants") or [{}]
    return variants[0].get("InstanceType")


def deploy(
    clients: EndpointClients, plan: EndpointPlan, *, waiter_config: Mapping[str, int] | None = None
) -> DeployResult:
    """Deploy ``plan`` (idempotent): the model, the configuration, then create or update the endpoint
    and wait for it; for an async plan, scaling to zero. Returns what it did and DescribeEndpoint."""
    problem = endpoint_name_problem(plan.endpoint_name)
    if problem:
        raise ValueError(f"endpoint name {plan.endpoint_name!r}: {problem}")
    sagemaker = clients.sagemaker
    approved_package(sagemaker, plan.model_package_arn)
    model = model_request(plan)
    config = endpoint_config_request(plan, model["ModelName"])
    result = DeployResult(plan.endpoint_name, "unchanged", model["ModelName"], config["EndpointConfigName"])
    if _create_if_missing(sagemaker.describe_model, sagemaker.create_model, model, "ModelName"):
        result.created.append(f"model {model['ModelName']}")
    if _create_if_missing(
        sagemaker.describe_endpoint_config, sagemaker.create_endpoint_config, config, "EndpointConfigName"
    ):
        result.created.append(f"endpoint-config {config['EndpointConfigName']}")

    endpoint = describe_endpoint(sagemaker, plan.endpoint_name)
    if endpoint is not None and endpoint["EndpointStatus"] in IN_PROGRESS:
        endpoint = wait_in_service(sagemaker, plan.endpoint_name, waiter_config)
    if endpoint is None:
        sagemaker.create_endpoint(
            EndpointName=plan.endpoint_name, EndpointConfigName=config["EndpointConfigName"]
        )
        result.action = "created"
    elif endpoint["EndpointStatus"] != IN_SERVICE:
        raise _failure(endpoint, "cannot be deployed to; `robocar endpoint delete` it, then deploy again")
    elif endpoint["EndpointConfigName"] != config["EndpointConfigName"]:
        _prepare_update(clients, plan, endpoint)
        # Blue/green by default: no DeploymentConfig means all-at-once traffic shifting to a new fleet
        # (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green.html).
        sagemaker.update_endpoint(
            EndpointName=plan.endpoint_name, EndpointConfigName=config["EndpointConfigName"]
        )
        result.action = "updated"
    if result.action != "unchanged":
        endpoint = wait_in_service(sagemaker, plan.endpoint_name, waiter_config)
        if endpoint.get("EndpointConfigName") != config["EndpointConfigName"]:  # rolled back
            raise _failure(endpoint, f"was not updated to {config['EndpointConfigName']} (rolled back)")
    if plan.async_options is not None:
        apply_scaling(clients, plan.endpoint_name, plan.async_options)
    result.status = dict(endpoint or {})
    return result


def _prepare_update(clients: EndpointClients, plan: EndpointPlan, endpoint: Mapping[str, Any]) -> None:
    """An update that changes a scaled variant's instance type, or drops its scaling, fails unless the
    scaling is removed first: https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html
    (an async plan registers it again once the endpoint is in service)."""
    if clients.autoscaling is None or not _scaling_registered(clients.autoscaling, plan.endpoint_name):
        return
    changes_type = _current_instance_type(clients.sagemaker, endpoint) != plan.instance_type
    if changes_type or plan.async_options is None:
        remove_scaling(clients, plan.endpoint_name)


def apply_scaling(clients: EndpointClients, endpoint_name: str, options: AsyncOptions) -> dict[str, str]:
    """Register the variant (MinCapacity 0), the two policies and the alarm; each call creates or
    replaces, so a rerun leaves one of each. Returns the policy ARNs by name."""
    autoscaling = clients.autoscaling
    autoscaling.register_scalable_target(**scalable_target_request(endpoint_name, options))
    arns = {}
    for request in (
        target_tracking_policy_request(endpoint_name, options),
        step_scaling_policy_request(endpoint_name),
    ):
        arns[request["PolicyName"]] = autoscaling.put_scaling_policy(**request)["PolicyARN"]
    clients.cloudwatch.put_metric_alarm(**backlog_alarm_request(endpoint_name, arns[STEP_SCALING_POLICY]))
    return arns


def remove_scaling(clients: EndpointClients, endpoint_name: str) -> list[str]:
    """Delete the alarm, the policies and the scalable target (what is missing is skipped)."""
    removed = []
    alarm = backlog_alarm_name(endpoint_name)
    if clients.cloudwatch.describe_alarms(AlarmNames=[alarm]).get("MetricAlarms"):
        clients.cloudwatch.delete_alarms(AlarmNames=[alarm])
        removed.append(f"alarm {alarm}")
    target = _scaling_target(endpoint_name)
    policies = clients.autoscaling.describe_scaling_policies(
        ServiceNamespace=target["ServiceNamespace"],
        ResourceId=target["ResourceId"],
        ScalableDimension=target["ScalableDimension"],
    ).get("ScalingPolicies", [])
    for policy in policies:
        clients.autoscaling.delete_scaling_policy(PolicyName=policy["PolicyName"], **target)
        removed.append(f"scaling-policy {policy['PolicyName']}")
    if _scaling_registered(clients.autoscaling, endpoint_name):
        clients.autoscaling.deregister_scalable_target(**target)
        removed.append(f"scalable-target {target['ResourceId']}")
    return removed


# ---------------------------------------------------------------- status, delete
def endpoint_status(clients: EndpointClients, name: str) -> dict[str, Any] | None:
    """DescribeEndpoint, with its configuration (``Config``) and scaling (``ScalableTargets``,
    ``ScalingPolicies``) when there is any; None when there is no such endpoint."""
    endpoint = describe_endpoint(clients.sagemaker, name)
    if endpoint is None:
        return None
    endpoint.pop("ResponseMetadata", None)
    config = _describe(
        clients.sagemaker.describe_endpoint_config, EndpointConfigName=endpoint["EndpointConfigName"]
    )
    if config is not None:
        config.pop("ResponseMetadata", None)
        endpoint["Config"] = config
    if clients.autoscaling is not None:
        target = _scaling_target(name)
        endpoint["ScalableTargets"] = clients.autoscaling.describe_scalable_targets(
            ServiceNamespace=target["ServiceNamespace"], ResourceIds=[target["ResourceId"]],
            ScalableDimension=target["ScalableDimension"],
        ).get("ScalableTargets", [])  # fmt: skip
        endpoint["ScalingPolicies"] = clients.autoscaling.describe_scaling_policies(**target).get(
            "ScalingPolicies", []
        )
    return endpoint


def _versioned_names(pages: list[dict[str, Any]], key: str, member: str, endpoint_name: str) -> list[str]:
    names = [item[member] for page in pages for item in page.get(key, [])]
    return [name for name in names if is_versioned_name_of(endpoint_name, name)]


def _list_all(method: Any, **request: Any) -> list[dict[str, Any]]:
    pages, token = [], None
    while True:
        page = method(**request, **({"NextToken": token} if token else {}))
        pages.append(page)
        token = page.get("NextToken")
        if not token:
            return pages


def delete(clients: EndpointClients, name: str) -> list[str]:
    """Delete the endpoint, its scaling, and every configuration and model deploy made for it (this
    endpoint's versioned names); idempotent: what is gone already is skipped. Returns what it deleted.

    The scaling goes first: deleting an endpoint deregisters its scalable target only if the caller may
    (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-delete-with-scaling.html), and the alarm
    is ours to delete in any case."""
    sagemaker = clients.sagemaker
    deleted: list[str] = []
    if clients.autoscaling is not None and clients.cloudwatch is not None:
        deleted += remove_scaling(clients, name)
    endpoint = describe_endpoint(sagemaker, name)
    if endpoint is not None:
        sagemaker.delete_endpoint(EndpointName=name)
        deleted.append(f"endpoint {name}")
    base = _name_part(name, NAME_BASE_MAX)
    configs = _versioned_names(
        _list_all(sagemaker.list_endpoint_configs, NameContains=base, MaxResults=100),
        "EndpointConfigs", "EndpointConfigName", name,
    )  # fmt: skip
    models = _versioned_names(
        _list_all(sagemaker.list_models, NameContains=base, MaxResults=100), "Models", "ModelName", name
    )
    for config in configs:
        if _delete_if_present(sagemaker.delete_endpoint_config, EndpointConfigName=config):
            deleted.append(f"endpoint-config {config}")
    for model in models:
        if _delete_if_present(sagemaker.delete_model, ModelName=model):
            deleted.append(f"model {model}")
    return deleted


def _delete_if_present(method: Any, **request: Any) -> bool:
    try:
        method(**request)
    except Exception as exc:
        if _is_missing(exc):
            return False
        raise
    return True


# ---------------------------------------------------------------- invoke
def content_type_of(path_name: str, given: str | None = None) -> str:
    """``given``, else the type of the file's suffix (CONTENT_TYPES), else a ValueError asking for it."""
    if given:
        return given
    suffix = "." + path_name.rsplit(".", 1)[-1].lower() if "." in path_name else ""
    if suffix not in CONTENT_TYPES:
        known = ", ".join(sorted(CONTENT_TYPES))
        raise ValueError(f"no content type known for {path_name!r} (known: {known}): give --content-type")
    return CONTENT_TYPES[suffix]


def invoke(
    runtime: Any, name: str, body: bytes, content_type: str, accept: str = "application/json"
) -> tuple[str, bytes]:
    """InvokeEndpoint: the answer's content type and body."""
    response = runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType=content_type, Accept=accept)
    return str(response.get("ContentType", "")), response["Body"].read()


def invoke_async(
    runtime: Any, name: str, input_uri: str, content_type: str, accept: str = "application/json"
) -> dict[str, Any]:
    """InvokeEndpointAsync on an object already in S3: where the result (or failure) will be written."""
    response = runtime.invoke_endpoint_async(
        EndpointName=name, InputLocation=input_uri, ContentType=content_type, Accept=accept
    )
    return {key: value for key, value in response.items() if key != "ResponseMetadata"}


def plan_document(plan: EndpointPlan) -> dict[str, Any]:
    """``plan`` as JSON-ready data (for ``--json`` and logs)."""
    return asdict(plan)
