"""The Greengrass v2 component version for an approved model package: recipe in, CreateComponentVersion out.

``recipe.yaml`` (next to this file) is the template. For a package this fills in the component version
(``1.0.<package version>``), the package ARN and SHA-256 in the default configuration, and the artifacts:
the compiled model for the car's target (its S3 URI from the registry) and, optionally, the project wheel
that provides ``robocar-edge``. The recipe is sent as JSON in ``inlineRecipe``.

No artifact carries a ``Digest`` or ``Algorithm``: both are read-only in a recipe. Greengrass hashes the
S3 object itself when the version is created and replaces any value sent ("If you set this parameter,
AWS IoT Greengrass replaces the value that you set when you create the component",
https://docs.aws.amazon.com/greengrass/v2/developerguide/component-recipe-reference.html). The registry's
SHA-256 reaches the car through the configuration (``ArtifactSha256``), which ``robocar-edge pull``
checks the delivered archive against.

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
# The components a package can become: the drive loop (``robocar-edge run``) and the MQTT inference
# service (``robocar-edge serve``, edge/serve.py); each kind's template and default component name.
COMPONENT_KINDS: dict[str, tuple[Path, str]] = {
    "drive": (RECIPE_TEMPLATE, COMPONENT_NAME),
    "serve": (Path(__file__).with_name("serve-recipe.yaml"), "com.robocar.InferenceService"),
}
# Each recipe's models reach the cars as their own component (the stack's Greengrass component name
# parameters default to these): a classifier version never replaces a pilot version, and a car runs
# the one model its thing group deploys (docs/rollout.md, "One model per car").
COMPONENT_NAMES = {
    "pilot": COMPONENT_NAME,
    "classifier": "com.robocar.Classifier",
    "detection": "com.robocar.Detector",
}
# DefaultConfiguration keys that render_recipe sets per package: every deployment must merge them.
VERSION_CONFIGURATION_KEYS = ("ModelPackageGroup", "ModelPackageArn", "Target", "ArtifactSha256")


class ComponentError(Exception):
    """A package that cannot become a component (not approved, no artifact for the target, ...)."""


def greengrass_digest(sha256_hex: str) -> str:
    """An artifact's ``Digest`` as Greengrass stores it (``Algorithm: SHA-256``): base64 of the 32 bytes.

    Greengrass computes it from the S3 object at CreateComponentVersion; the local stand-in of the
    service (``pipelines.local.trigger.LocalGreengrassClient``) does the same with this function.
    """
    from edge.artifacts import normalize_sha256

    return base64.b64encode(bytes.fromhex(normalize_sha256(sha256_hex))).decode("ascii")


def load_template(path: Path = RECIPE_TEMPLATE) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def artifact_entry(uri: str) -> dict[str, Any]:
    """One recipe artifact; Greengrass adds ``Digest`` and ``Algorithm`` itself (module docstring)."""
    return {"URI": uri, "Unarchive": "NONE", "Permission": {"Read": "OWNER"}}


def version_configuration(recipe: dict[str, Any]) -> dict[str, Any]:
    """The configuration values that belong to this component version, for the deployment to merge.

    A car that already runs the component keeps its configuration across a version change: the nucleus
    merges the new version's ``DefaultConfiguration`` "with timestamp 1 so that they don't overwrite any
    pre-existing values" (resolveConfigurationToApply in https://github.com/aws-greengrass/
    aws-greengrass-nucleus/blob/main/src/main/java/com/aws/greengrass/componentmanager/KernelConfigResolver.java;
    "Configuration updates are patch operations ... If the core device doesn't have the component, then
    the configuration update modifies and applies the default configuration",
    https://docs.aws.amazon.com/greengrass/v2/developerguide/update-component-configurations.html).
    Left in the defaults only, the second model would be checked against the first one's SHA-256.
    """
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    return {key: defaults[key] for key in VERSION_CONFIGURATION_KEYS}


def render_recipe(
    template: dict[str, Any],
    description: dict[str, Any],
    target: str,
    *,
    component_name: str = COMPONENT_NAME,
    component_version: str | None = None,
    code_uri: str | None = None,
) -> dict[str, Any]:
    """The recipe for one approved package (``describe_model_package`` response) and one edge target.

    ``code_uri`` is the S3 URI of a ``robocar_pipeline-*.whl`` to install on the device.
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
    manifest["Artifacts"] = [artifact_entry(candidate.artifact_uri)]
    if code_uri is not None:
        wheel = code_uri.rsplit("/", 1)[-1]
        if not wheel.endswith(".whl"):
            raise ComponentError(f"code artifact {code_uri} is not a wheel (.whl)")
        manifest["Artifacts"].append(artifact_entry(code_uri))
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
    parser.add_argument(
        "--kind", choices=tuple(COMPONENT_KINDS), default="drive",
        help="drive: robocar-edge run (recipe.yaml); serve: the MQTT inference service, robocar-edge serve "
        "(serve-recipe.yaml) (default: drive)",
    )  # fmt: skip
    parser.add_argument(
        "--component-name",
        help=", ".join(f"{kind}: {name}" for kind, (_, name) in COMPONENT_KINDS.items()).join(
            ("(default: ", ")")
        ),
    )
    parser.add_argument("--component-version", help="semantic version (default: 1.0.<package version>)")
    parser.add_argument("--code-uri", help="S3 URI of the robocar_pipeline wheel to install on the device")
    parser.add_argument("--recipe-out", type=Path, help="also write the rendered recipe (JSON) here")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the recipe; do not call CreateComponentVersion"
    )


def run(args: argparse.Namespace, make_clients: Callable[[argparse.Namespace], Any]) -> int:
    """``robocar edge component``: describe the package, render, and create (or print) the version."""
    aws = make_clients(args)
    description = aws.sagemaker.describe_model_package(ModelPackageName=args.model_package_arn)
    template, default_name = COMPONENT_KINDS[args.kind]
    recipe = render_recipe(
        load_template(template),
        description,
        args.edge_target,
        component_name=args.component_name or default_name,
        component_version=args.component_version,
        code_uri=args.code_uri,
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
