"""The Greengrass v2 component version for an approved model package: recipe in, CreateComponentVersion out.

``recipe.yaml`` (next to this file) is the template. For a package this fills in the component version
(``1.0.<package version>``), the package ARN and SHA-256 in the default configuration, and the artifacts:
the compiled model for the car's target (its S3 URI from the registry) and, optionally, the project wheel
that provides ``robocar-edge``; each with its ``Digest`` (base64 of the SHA-256 bytes, what Greengrass
checks) and ``Algorithm: SHA-256``. The recipe is sent as JSON in ``inlineRecipe``.

Runs on the workstation, not the car: it needs boto3 and PyYAML, imported when used.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

RECIPE_TEMPLATE = Path(__file__).with_name("recipe.yaml")
COMPONENT_NAME = "com.robocar.Pilot"


class ComponentError(Exception):
    """A package that cannot become a component (not approved, no artifact for the target, ...)."""


def greengrass_digest(sha256_hex: str) -> str:
    """Greengrass wants the SHA-256 as base64 of its 32 bytes, not as hex."""
    from edge.artifacts import normalize_sha256

    return base64.b64encode(bytes.fromhex(normalize_sha256(sha256_hex))).decode("ascii")


def load_template(path: Path = RECIPE_TEMPLATE) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def artifact_entry(uri: str, sha256_hex: str) -> dict[str, Any]:
    return {
        "URI": uri,
        "Digest": greengrass_digest(sha256_hex),
        "Algorithm": "SHA-256",
        "Unarchive": "NONE",
        "Permission": {"Read": "OWNER"},
    }


def render_recipe(
    template: dict[str, Any],
    description: dict[str, Any],
    target: str,
    *,
    component_name: str = COMPONENT_NAME,
    component_version: str | None = None,
    code_wheel: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The recipe for one approved package (``describe_model_package`` response) and one edge target.

    ``code_wheel`` is ``(s3 uri, sha256 hex)`` of a ``robocar_pipeline-*.whl`` to install on the device.
    """
    from edge.agent import candidate_from_package

    arn = description["ModelPackageArn"]
    if description.get("ModelApprovalStatus") != "Approved":
        raise ComponentError(f"{arn} is {description.get('ModelApprovalStatus')}, not Approved")
    candidate = candidate_from_package(description, target)
    if candidate is None:
        raise ComponentError(f"{arn} has no artifact for target {target!r}")
    if not candidate.artifact_uri.endswith("/model.tar.gz"):
        raise ComponentError(f"{arn}: artifact {candidate.artifact_uri} is not a model.tar.gz")
    recipe = copy.deepcopy(template)
    recipe["ComponentName"] = component_name
    recipe["ComponentVersion"] = component_version or f"1.0.{candidate.version}"
    configuration = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    configuration.update(
        ModelPackageGroup=description.get("ModelPackageGroupName", configuration["ModelPackageGroup"]),
        ModelPackageArn=arn,
        Target=target,
        ArtifactSha256=candidate.sha256,
    )
    manifest = recipe["Manifests"][0]
    manifest["Artifacts"] = [artifact_entry(candidate.artifact_uri, candidate.sha256)]
    if code_wheel is not None:
        uri, sha256_hex = code_wheel
        wheel = uri.rsplit("/", 1)[-1]
        if not wheel.endswith(".whl"):
            raise ComponentError(f"code artifact {uri} is not a wheel (.whl)")
        manifest["Artifacts"].append(artifact_entry(uri, sha256_hex))
        # The component's own venv: the wheel with the edge extra (runtimes, paho); no SDK, no TensorFlow.
        manifest["Lifecycle"]["Install"] = {
            "Script": f'python3 -m venv "{{work:path}}/venv" && "{{work:path}}/venv/bin/pip" install '
            f'"{{artifacts:path}}/{wheel}[edge]"'
        }
        manifest["Lifecycle"]["Run"]["Script"] = manifest["Lifecycle"]["Run"]["Script"].replace(
            "robocar-edge ", '"{work:path}/venv/bin/robocar-edge" '
        )
    return recipe


def component_request(recipe: dict[str, Any], package_arn: str) -> dict[str, Any]:
    """The ``create_component_version`` arguments.

    The client token is derived from the recipe, so retrying the same request is idempotent.
    """
    inline = json.dumps(recipe, indent=2).encode("utf-8")
    return {
        "inlineRecipe": inline,
        "tags": {"robocar:model-package-arn": package_arn[:256]},
        "clientToken": hashlib.sha256(inline).hexdigest(),
    }


# ---- the command ----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-package-arn", required=True, help="the approved model package")
    parser.add_argument("--component-name", default=COMPONENT_NAME, help=f"(default: {COMPONENT_NAME})")
    parser.add_argument("--component-version", help="semantic version (default: 1.0.<package version>)")
    parser.add_argument("--code-uri", help="S3 URI of the robocar_pipeline wheel to install on the device")
    parser.add_argument("--code-wheel", type=Path, help="the same wheel locally, to compute its digest")
    parser.add_argument("--recipe-out", type=Path, help="also write the rendered recipe (JSON) here")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the recipe; do not call CreateComponentVersion"
    )


def run(args: argparse.Namespace, make_clients: Callable[[argparse.Namespace], Any]) -> int:
    """``robocar edge component``: describe the package, render, and create (or print) the version."""
    from edge import artifacts

    if bool(args.code_uri) != bool(args.code_wheel):
        raise ComponentError("--code-uri and --code-wheel go together (the digest is computed from the file)")
    code_wheel = (args.code_uri, artifacts.sha256_file(args.code_wheel)) if args.code_uri else None
    aws = make_clients(args)
    description = aws.sagemaker.describe_model_package(ModelPackageName=args.model_package_arn)
    recipe = render_recipe(
        load_template(),
        description,
        args.target,
        component_name=args.component_name,
        component_version=args.component_version,
        code_wheel=code_wheel,
    )
    request = component_request(recipe, args.model_package_arn)
    if args.recipe_out:
        args.recipe_out.write_bytes(request["inlineRecipe"])
    if args.dry_run:
        sys.stdout.write(request["inlineRecipe"].decode("utf-8") + "\n")
        return 0
    if getattr(aws, "is_local", False):
        raise ComponentError("Greengrass has no local mode: use --dry-run with a local registry")
    response = greengrass_client(args).create_component_version(**request)
    print(f"created {response['componentName']} {response['componentVersion']}: {response['arn']}")
    return 0


def greengrass_client(args: argparse.Namespace) -> Any:
    import boto3

    session = boto3.session.Session(region_name=args.region) if args.region else boto3.session.Session()
    return session.client("greengrassv2", endpoint_url=args.endpoint_url)
