"""Where the pipeline lives: region, role, bucket, prefix, names, endpoint; and where commands act.

The settings, their flags, variables, ``robocar.toml`` keys and defaults are edge/settings.py's table,
which ``robocar-edge`` reads too; this module resolves the pipeline's through it (flag > environment >
robocar.toml > default) and checks each value against what AWS accepts. A setting that is still missing
is an error that names the flag, the variable and the config key.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from edge import settings as core
from edge.settings import CONFIG_FILE, Backend, Setting, SettingsError

__all__ = [
    "CONFIG_FILE", "EXAMPLE_VALUES", "SETTINGS", "Backend", "Setting", "Settings", "SettingsError", "resolve",
]  # fmt: skip

# The settings that say where the pipeline lives (the Settings fields), as edge/settings.py defines them.
KEYS = (
    "region", "role", "bucket", "prefix", "pipeline_name", "model_package_group", "endpoint_url", "recipe",
    "training_algorithm",
)  # fmt: skip
SETTINGS: tuple[Setting, ...] = tuple(core.setting(key) for key in KEYS)
EXAMPLE_VALUES = core.EXAMPLE_VALUES


@dataclass(frozen=True)
class Settings:
    region: str
    role: str
    bucket: str
    prefix: str
    pipeline_name: str
    model_package_group: str
    endpoint_url: str | None
    recipe: str = "pilot"
    training_algorithm: str = core.TRAINING_ALGORITHMS[0]  # the classifier's trainer


def add_arguments(parser: Any, *, backend: bool = False) -> None:
    """Add the pipeline settings' flags (and ``--config``) to an argparse parser; with ``backend``, also
    where the command acts (``--backend``/``--local``/``--aws`` and ``--workspace``, edge/settings.py)."""
    keys = KEYS + (("backend", "workspace") if backend else ())
    core.add_arguments(parser, keys, f"settings (flag > environment > {CONFIG_FILE} > default)")


def backend(args: Any) -> Backend:
    """Where the command acts, by the one rule of both CLIs (``edge.settings.choose_backend``)."""
    return core.choose_backend(core.resolve_args(args, core.BACKEND_KEYS))


def setting_problem(key: str, value: str, values: dict[str, str | None]) -> str | None:
    """What AWS (or local S3, which is a folder) refuses in a setting's value, or None.

    Checked here, before anything is built or sent, against the same rules the requests meet later:
    botocore's region names, the S3 bucket naming rules, S3 key rules for the prefix
    (``edge.workspace.local_key_problem``), SageMaker's patterns for the pipeline, role and group names
    (botocore's model, ``pipelines/aws_rules.py``).
    """
    from pipelines import aws_rules

    if key == "region":
        from botocore.exceptions import InvalidRegionError
        from botocore.utils import validate_region_name

        try:
            validate_region_name(value)
        except InvalidRegionError:
            return "not an AWS region name (e.g. eu-west-1)"
        return None
    if key == "bucket":
        problem = aws_rules.s3_bucket_name_problem(value)
        return f"not an S3 bucket name ({problem})" if problem else None
    if key == "prefix":
        return prefix_problem(value)
    if key == "endpoint_url":
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and parts.netloc and not any(c.isspace() for c in value)
        return None if ok else "not an http(s):// URL"
    if key in ("pipeline_name", "role"):
        request = {"PipelineName": values["pipeline_name"], "RoleArn": values["role"]}
        member = "pipelineName" if key == "pipeline_name" else "roleArn"
        found = aws_rules.request_problems("sagemaker", "CreatePipeline", request)
        return next((problem for problem in found if f"at '{member}'" in problem), None)
    if key == "model_package_group":
        found = aws_rules.request_problems(
            "sagemaker", "CreateModelPackageGroup", {"ModelPackageGroupName": value}
        )
        return found[0] if found else None
    return None


def prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` is not a key prefix for this pipeline's objects (``<prefix>/code/...``), or None.

    No leading slash, no empty, ``.`` or ``..`` segment: S3 would keep such keys as they are, local S3
    cannot (``edge.workspace.key_path_problem``, docs/local-mode-safety.md). What only a local folder
    limits (a segment's length) is refused where local S3 stores a key, not here: AWS allows it.
    """
    from edge.workspace import key_path_problem

    problem = key_path_problem(prefix)
    return f"not an S3 key prefix: {problem}" if problem else None


def resolve(args: Any, *, use_examples: bool = False) -> Settings:
    """Settings from parsed flags, the environment and the config file, each checked
    (``setting_problem``): a bad value is a SettingsError naming where it came from.

    ``use_examples`` fills region/role/bucket with placeholders (account 123456789012): for printing
    a definition or acting locally, never for calling AWS. A trailing '/' of the prefix is dropped
    (``cars/`` is ``cars``).
    """
    resolved = core.resolve_args(args, KEYS)
    values = core.with_recipe_names(resolved)
    if resolved.given("training_algorithm") and values["recipe"] == "pilot":
        where = resolved.where("training_algorithm")
        raise SettingsError(
            f"{where} chooses an image recipe's trainer: add --recipe classifier or detection"
        )
    missing = []
    for s in SETTINGS:
        value = values[s.key]
        if value is None and use_examples:
            value = EXAMPLE_VALUES.get(s.key)
        if value is None and s.key != "endpoint_url":
            missing.append(f"{s.flag} (or ${s.env[0]}, or '{s.key}' in {CONFIG_FILE})")
        if s.key == "prefix" and isinstance(value, str) and value.endswith("/") and value.strip("/"):
            value = value.rstrip("/")
        values[s.key] = value
    if missing:
        raise SettingsError("missing setting(s): " + "; ".join(missing))
    if not str(values["role"]).startswith("arn:"):
        raise SettingsError(
            f"--role must be an IAM role ARN (arn:aws:iam::<account>:role/<name>), got {values['role']!r}"
        )
    for s in SETTINGS:
        value = values[s.key]
        problem = setting_problem(s.key, value, values) if value is not None else None
        if problem:
            raise SettingsError(f"{core.where(s, resolved.sources[s.key])} {value!r}: {problem}")
    return Settings(**values)  # type: ignore[arg-type]


def resolve_with_backend(args: Any) -> tuple[Settings, Backend]:
    """The settings and where to act: locally, the placeholders stand in for region, role and bucket
    (nothing reaches AWS) and no endpoint URL is used."""
    where = backend(args)
    settings = resolve(args, use_examples=where.is_local)
    return (replace(settings, endpoint_url=None) if where.is_local else settings), where
