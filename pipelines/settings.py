"""Where the pipeline lives: region, role, bucket, prefix, names, endpoint.

Each setting comes from its flag, else its environment variable, else the config file (``robocar.toml``
in the working directory, or ``--config``), else its default where one makes sense. A setting that is
still missing is an error that names the flag, the variable and the config key.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONFIG_FILE = "robocar.toml"


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says how to provide it."""


@dataclass(frozen=True)
class Setting:
    key: str  # also the attribute name and the config-file key
    flag: str
    env: tuple[str, ...]
    default: str | None
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("region", "--region", ("ROBOCAR_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"), None, "AWS region"),
    Setting("role", "--role", ("ROBOCAR_ROLE_ARN",), None, "the pipeline's execution role ARN"),
    Setting("bucket", "--bucket", ("ROBOCAR_BUCKET",), None, "S3 bucket for data, code and artifacts"),
    Setting("prefix", "--prefix", ("ROBOCAR_PREFIX",), "robocar", "key prefix inside the bucket"),
    Setting(
        "pipeline_name", "--pipeline-name", ("ROBOCAR_PIPELINE_NAME",), "robocar-pipeline", "pipeline name"
    ),
    Setting(
        "model_package_group",
        "--model-package-group",
        ("ROBOCAR_MODEL_PACKAGE_GROUP",),
        "robocar-pilots",
        "model package group in the registry",
    ),  # fmt: skip
    Setting(
        "endpoint_url",
        "--endpoint-url",
        ("ROBOCAR_ENDPOINT_URL",),
        None,
        "AWS endpoint (e.g. a moto server: http://127.0.0.1:5000)",
    ),  # fmt: skip
)
# Values that let a definition be printed with no account at all; never used to talk to AWS.
EXAMPLE_VALUES = {
    "region": "us-east-1",
    "role": "arn:aws:iam::123456789012:role/robocar-pipeline-execution",
    "bucket": "robocar-data-123456789012",
}


@dataclass(frozen=True)
class Settings:
    region: str
    role: str
    bucket: str
    prefix: str
    pipeline_name: str
    model_package_group: str
    endpoint_url: str | None


def add_arguments(parser: Any) -> None:
    """Add every setting's flag (and ``--config``) to an argparse parser."""
    group = parser.add_argument_group("where the pipeline lives (flag > environment > robocar.toml)")
    for s in SETTINGS:
        default = f" (default: {s.default})" if s.default else ""
        group.add_argument(s.flag, dest=s.key, default=None, help=f"{s.help}; env {s.env[0]}{default}")
    group.add_argument("--config", type=Path, default=None, help=f"config file (default: ./{CONFIG_FILE})")


CONFIG_MAX_BYTES = 64 * 1024  # robocar.toml holds seven short strings; anything bigger is not one


def _read_config(candidate: Path) -> str:
    """The config file's text: a regular file of at most CONFIG_MAX_BYTES of UTF-8 (never a FIFO or a
    device, whose read could block or never end)."""
    if not candidate.is_file():
        raise SettingsError(f"config file {candidate} is not a regular file")
    try:
        with open(candidate, "rb") as handle:
            data = handle.read(CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        raise SettingsError(f"config file {candidate} cannot be read: {exc.strerror}") from None
    if len(data) > CONFIG_MAX_BYTES:
        raise SettingsError(f"config file {candidate} is larger than {CONFIG_MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError(f"config file {candidate} is not UTF-8 text (TOML is)") from None


def _config_values(path: Path | None) -> dict[str, Any]:
    candidate = path or Path(CONFIG_FILE)
    if not candidate.exists():
        if path is not None:
            raise SettingsError(f"config file {path} does not exist")
        return {}
    try:
        data = tomllib.loads(_read_config(candidate))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {candidate} is not valid TOML: {exc}") from None
    section = data.get("robocar", data)
    if not isinstance(section, dict):
        raise SettingsError(f"config file {candidate}: [robocar] must be a table of settings")
    unknown = sorted(set(section) - {s.key for s in SETTINGS})
    if unknown:
        raise SettingsError(f"config file {candidate}: unknown key(s) {', '.join(unknown)}")
    for key, value in section.items():
        if not isinstance(value, str):  # TOML has types: region = 5 is an integer, bucket = ["a"] a list
            raise SettingsError(
                f"config file {candidate}: {key} must be a string (in quotes), got {_toml_type(value)} "
                f"{value!r}"
            )
    return section


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", list: "an array", dict: "a table"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), "a date or time")


def _where(setting: Setting, source: str) -> str:
    """How the user gave a setting, for the message that refuses it."""
    if source == "flag":
        return setting.flag
    if source == "config":
        return f"'{setting.key}' in {CONFIG_FILE}"
    if source == "default":
        return f"{setting.flag} (default)"
    return f"${source}"


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
    a definition, never for calling AWS. A trailing '/' of the prefix is dropped (``cars/`` is ``cars``).
    """
    config = _config_values(getattr(args, "config", None))
    values: dict[str, str | None] = {}
    sources: dict[str, str] = {}
    missing = []
    for s in SETTINGS:
        value, source = getattr(args, s.key, None), "flag"
        if not value:
            value, source = next(((os.environ[e], e) for e in s.env if os.environ.get(e)), (None, ""))
        if not value:
            value, source = config.get(s.key), "config"
        if not value:
            value, source = s.default, "default"
        if value is None and use_examples:
            value = EXAMPLE_VALUES.get(s.key)
        if value is None and s.key != "endpoint_url":
            missing.append(f"{s.flag} (or ${s.env[0]}, or '{s.key}' in {CONFIG_FILE})")
        if s.key == "prefix" and isinstance(value, str) and value.endswith("/") and value.strip("/"):
            value = value.rstrip("/")
        values[s.key], sources[s.key] = value, source
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
            raise SettingsError(f"{_where(s, sources[s.key])} {value!r}: {problem}")
    return Settings(**values)  # type: ignore[arg-type]
