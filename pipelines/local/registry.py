"""The local SageMaker Model Registry for the control plane: groups and versions written under
``ROOT/registry/`` (``edge/workspace.py`` has the layout), behind boto3's ``sagemaker`` names.

``LocalSageMakerClient`` adds the writes (CreateModelPackageGroup, CreateModelPackage,
UpdateModelPackage) and the group reads to the car's read-only reader (``edge/local_readers.py``).
Every write holds ``registry/.lock``, so two processes never hand out the same version
(docs/contracts.md section 6).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from edge.atomic_files import atomic_write_json, file_lock
from edge.aws_errors import check_params, response_metadata
from edge.local_readers import (
    LIST_PARAMS,
    LocalRegistryReader,
    Paginator,
    check_approval_status,
    from_record,
    list_response,
    now_utc,
    page_items,
    sort_records,
    time_filter,
    to_iso,
    validation_error,
)

# CreateModelPackageGroup's ModelPackageGroupName pattern (botocore's sagemaker model, EntityName):
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackageGroup.html
_GROUP_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_GROUP_CREATE_PARAMS = ("ModelPackageGroupDescription", "Tags")
_PACKAGE_CREATE_PARAMS = (
    "ModelPackageGroupName",
    "ModelPackageName",
    "ModelPackageDescription",
    "InferenceSpecification",
    "ValidationSpecification",
    "SourceAlgorithmSpecification",
    "CertifyForMarketplace",
    "Tags",
    "ModelApprovalStatus",
    "MetadataProperties",
    "ModelMetrics",
    "ClientToken",
    "Domain",
    "Task",
    "SamplePayloadUrl",
    "CustomerMetadataProperties",
    "DriftCheckBaselines",
    "AdditionalInferenceSpecifications",
    "SkipModelValidation",
    "SourceUri",
    "SecurityConfig",
    "ModelCard",
    "ModelLifeCycle",
)


def set_given_fields(record: dict[str, Any], given: dict[str, Any], fields: tuple[str, ...]) -> None:
    """An Update* call's fields: each of ``fields`` that the request gives replaces the stored one."""
    record.update({field: given[field] for field in fields if given.get(field) is not None})


class LocalSageMakerClient(LocalRegistryReader):
    """boto3's ``sagemaker`` client, Model Registry part, persisted under ``ROOT/registry/``.

    Layout: ``groups/<group>.json`` and ``packages/<group>/<version>.json`` (one JSON document per
    version, the describe shape with ISO times). Writes take ``registry/.lock``.
    """

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.layout.registry_lock)

    # -- groups
    def create_model_package_group(self, *, ModelPackageGroupName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs, allowed=_GROUP_CREATE_PARAMS)
        name = ModelPackageGroupName
        if not isinstance(name, str) or not _GROUP_NAME_RE.match(name):
            raise validation_error(
                f"1 validation error detected: Value '{name}' at 'modelPackageGroupName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: "
                f"{_GROUP_NAME_RE.pattern}",
                "CreateModelPackageGroup",
            )
        with self._lock():
            if self._find_group(name) is not None:
                raise validation_error(
                    f"Model Package Group already exists: {self._group_arn(name)}", "CreateModelPackageGroup"
                )
            record: dict[str, Any] = {
                "ModelPackageGroupName": name,
                "ModelPackageGroupArn": self._group_arn(name),
                "CreationTime": to_iso(now_utc()),
                "CreatedBy": {},
                "ModelPackageGroupStatus": "Completed",
            }
            if kwargs.get("ModelPackageGroupDescription") is not None:
                record["ModelPackageGroupDescription"] = kwargs["ModelPackageGroupDescription"]
            if kwargs.get("Tags"):
                record["Tags"] = kwargs["Tags"]
            atomic_write_json(self.layout.group_file(name), record)
        return {
            "ModelPackageGroupArn": record["ModelPackageGroupArn"],
            "ResponseMetadata": response_metadata(),
        }

    def describe_model_package_group(self, *, ModelPackageGroupName: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        check_params(kwargs)
        group = self._find_group(ModelPackageGroupName)
        if group is None:
            raise validation_error(
                f"ModelPackageGroup {self._group_arn(ModelPackageGroupName)} does not exist.",
                "DescribeModelPackageGroup",
            )
        out = from_record(group)
        out.pop("Tags", None)  # describe does not return tags (ListTags does)
        return {**out, "ResponseMetadata": response_metadata()}

    def list_model_package_groups(self, **kwargs: Any) -> dict[str, Any]:
        operation = "ListModelPackageGroups"
        check_params(kwargs, allowed=(*LIST_PARAMS, "CrossAccountFilterOption"))
        groups = [from_record(g) for g in self._groups()]
        if kwargs.get("NameContains"):
            groups = [g for g in groups if kwargs["NameContains"] in g["ModelPackageGroupName"]]
        groups = sort_records(time_filter(groups, kwargs), kwargs, "ModelPackageGroupName", operation)
        page, token = page_items(groups, kwargs, operation)
        fields = (
            "ModelPackageGroupName",
            "ModelPackageGroupArn",
            "ModelPackageGroupDescription",
            "CreationTime",
            "ModelPackageGroupStatus",
        )
        summaries = [{k: g[k] for k in fields if k in g} for g in page]
        return list_response("ModelPackageGroupSummaryList", summaries, token)

    # -- packages
    def create_model_package(self, **kwargs: Any) -> dict[str, Any]:
        operation = "CreateModelPackage"
        check_params(kwargs, allowed=_PACKAGE_CREATE_PARAMS)
        group_name = kwargs.get("ModelPackageGroupName")
        if kwargs.get("ModelPackageName") and group_name:
            raise validation_error(
                "Both ModelPackageName and ModelPackageGroupName are provided in the input. "
                "Cannot determine which one to use.",
                operation,
            )
        if not group_name:
            raise validation_error(
                "The local registry holds versioned model packages only: give ModelPackageGroupName.",
                operation,
            )
        status = kwargs.get("ModelApprovalStatus", "PendingManualApproval")
        check_approval_status(status, operation)
        _check_inference_specification(kwargs.get("InferenceSpecification"), operation)
        _check_additional_specifications(kwargs.get("AdditionalInferenceSpecifications") or [], [], operation)
        with self._lock():
            group = self._find_group(group_name)
            if group is None:
                raise validation_error(
                    f"Model Package Group {self._group_arn(group_name)} does not exist.", operation
                )
            group_name = group["ModelPackageGroupName"]
            existing = self._packages(group_name)
            token = kwargs.get("ClientToken")
            if token:  # idempotent retries, as AWS does for a repeated ClientToken
                for package in existing:
                    if package.get("_ClientToken") == token:
                        return {
                            "ModelPackageArn": package["ModelPackageArn"],
                            "ResponseMetadata": response_metadata(),
                        }
            version = max((p["ModelPackageVersion"] for p in existing), default=0) + 1
            now = to_iso(now_utc())
            record: dict[str, Any] = {
                "ModelPackageGroupName": group_name,
                "ModelPackageVersion": version,
                "ModelPackageArn": self._package_arn(group_name, version),
                "CreationTime": now,
                "LastModifiedTime": now,
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
                "CertifyForMarketplace": bool(kwargs.get("CertifyForMarketplace", False)),
                "ModelApprovalStatus": status,
                "CreatedBy": {},
            }
            skip = {
                "ModelPackageGroupName",
                "ModelApprovalStatus",
                "CertifyForMarketplace",
                "ClientToken",
                "Tags",
            }
            record.update({k: v for k, v in kwargs.items() if k not in skip and v is not None})
            if token:
                record["_ClientToken"] = token
            atomic_write_json(self.layout.package_file(group_name, version), record)
        return {"ModelPackageArn": record["ModelPackageArn"], "ResponseMetadata": response_metadata()}

    def update_model_package(self, *, ModelPackageArn: str, **kwargs: Any) -> dict[str, Any]:  # noqa: N803
        operation = "UpdateModelPackage"
        check_params(
            kwargs,
            allowed=(
                "ModelApprovalStatus",
                "ApprovalDescription",
                "CustomerMetadataProperties",
                "CustomerMetadataPropertiesToRemove",
                "AdditionalInferenceSpecificationsToAdd",
                "InferenceSpecification",
                "SourceUri",
                "ModelCard",
                "ModelLifeCycle",
                "ClientToken",
            ),
        )
        if "ModelApprovalStatus" in kwargs:
            check_approval_status(kwargs["ModelApprovalStatus"], operation)
        with self._lock():
            record, path = self._find_package(ModelPackageArn, operation)
            to_add = kwargs.get("AdditionalInferenceSpecificationsToAdd") or []
            _check_additional_specifications(
                to_add, record.get("AdditionalInferenceSpecifications", []), operation
            )
            set_given_fields(
                record,
                kwargs,
                ("ModelApprovalStatus", "ApprovalDescription", "InferenceSpecification", "SourceUri"),
            )
            # AWS merges metadata: given keys are set, listed keys removed, the rest stay.
            metadata = dict(record.get("CustomerMetadataProperties", {}))
            metadata.update(kwargs.get("CustomerMetadataProperties") or {})
            for removed in kwargs.get("CustomerMetadataPropertiesToRemove") or []:
                metadata.pop(removed, None)
            if metadata or "CustomerMetadataProperties" in record:
                record["CustomerMetadataProperties"] = metadata
            if to_add:
                record["AdditionalInferenceSpecifications"] = [
                    *record.get("AdditionalInferenceSpecifications", []),
                    *to_add,
                ]
            record["LastModifiedTime"] = to_iso(now_utc())
            record["LastModifiedBy"] = {}
            atomic_write_json(path, record)
        return {"ModelPackageArn": record["ModelPackageArn"], "ResponseMetadata": response_metadata()}

    def get_paginator(self, operation_name: str) -> Paginator:
        if operation_name == "list_model_package_groups":
            return Paginator(self.list_model_package_groups, "NextToken", "NextToken")
        return super().get_paginator(operation_name)


def _check_inference_specification(spec: Any, operation: str) -> None:
    if spec is None:
        return
    containers = spec.get("Containers") if isinstance(spec, dict) else None
    if not containers or not all(isinstance(c, dict) and c.get("Image") for c in containers):
        raise validation_error(
            "InferenceSpecification.Containers must list containers, each with an Image.", operation
        )


def _check_additional_specifications(
    to_add: list[dict[str, Any]], existing: list[dict[str, Any]], operation: str
) -> None:
    names = [s.get("Name") for s in existing]
    for spec in to_add:
        if not isinstance(spec, dict) or not spec.get("Name") or not spec.get("Containers"):
            raise validation_error(
                "Each AdditionalInferenceSpecification needs a Name and at least one container.", operation
            )
        if spec["Name"] in names:
            raise validation_error(
                f"AdditionalInferenceSpecification name {spec['Name']} is not unique in the model package.",
                operation,
            )
        names.append(spec["Name"])
