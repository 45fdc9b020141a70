"""``robocar trigger watch``: the EventBridge rules of the stack, locally (``pipelines/local/trigger.py``)."""

from __future__ import annotations

import argparse
from typing import Any

from edge import settings as core
from pipelines import settings as settings_mod


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "trigger", help="local EventBridge: new data starts the recipe's pipeline, approvals roll out"
    )
    commands = parser.add_subparsers(dest="trigger_command", metavar="ACTION", required=True)
    watch = commands.add_parser(
        "watch",
        help="poll the recipe's local raw-data prefix and registry group, as the stack's rules do on AWS",
        description="Poll the workspace's local S3 folder under the recipe's raw-data prefix. The pilot "
        "(--recipe pilot, the default) watches <prefix>/raw/: an uploaded tub (its manifest.json) or tub "
        "archive (.tar.gz/.zip); the classifier (--recipe classifier) watches <prefix>/raw-classifier/ and "
        "the detector (--recipe detection) <prefix>/raw-detection/: a Ground Truth output manifest "
        "(*.manifest), once it and the photos in its folder have settled. Each runs the snapshot "
        "function, which names the raw prefix's contents by a manifest under <prefix>/datasets/ and "
        "starts one local execution of the recipe's pipeline on it, however often "
        "it is seen (one dataset, one execution). Poll the recipe's group in the local model registry: a "
        "package that becomes Approved is rolled out as the recipe's Greengrass component to the "
        "recipe's thing group (com.robocar.Pilot to robocar-cars, com.robocar.Classifier to "
        "robocar-classifier-cars, com.robocar.Detector to robocar-detector-cars: a car runs one model), "
        "recorded under <workspace>/greengrass/. "
        "The rules are those of infra/template.yaml (pipelines/events.py). The pipeline must have been "
        "upserted locally once (`robocar run --local`, with the same --recipe).",
    )
    watch.add_argument("--once", action="store_true", help="poll once and exit (for scripts and tests)")
    watch.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default: 5)")
    watch.add_argument(
        "--settle", type=float, default=2.0,
        help="new data starts the pipeline once its files are this many seconds old (default: 2)",
    )  # fmt: skip
    watch.add_argument(
        "--component-name",
        default=None,
        help="Greengrass component name (default: the recipe's, as the stack's)",
    )
    watch.add_argument(
        "--thing-group", default=None, help="the cars' thing group (default: the recipe's, as the stack's)"
    )
    settings_mod.add_arguments(watch, backend=True)  # local is the only backend `trigger watch` has
    core.add_arguments(watch, ("edge_target",), "the cars")
    watch.set_defaults(handler=_watch)


def _check_rules(settings: settings_mod.Settings, config: Any) -> None:
    """The rules this watch stands for, as the stack would create them: EventBridge must accept them.

    Raises what EventBridge answers to the first request it would refuse (``pipelines/infra.py``).
    """
    from pipelines import infra

    names = {
        "pipeline_name": settings.pipeline_name,
        "model_package_group": settings.model_package_group,
        "thing_group": config.thing_group,
        "component_name": config.component_name,
    }
    overrides = {
        "Prefix": settings.prefix.strip("/"),
        "EdgeTarget": config.edge_target,
        **{infra.RECIPE_PARAMETERS[config.recipe][key]: value for key, value in names.items()},
    }
    infra.validate_rule_requests(infra.load_template(), overrides, region=settings.region)


def _watch(args: argparse.Namespace) -> int:
    from edge.aws import clients
    from edge.aws_errors import ClientError
    from pipelines.commands.run import Progress
    from pipelines.local.trigger import TriggerConfig, watch

    if args.interval <= 0 or args.settle < 0:
        raise ValueError("--interval must be positive and --settle not negative (seconds)")
    if not settings_mod.backend(args).is_local:
        raise ValueError("`robocar trigger watch` plays the rules on the local workspace: add --local")
    settings, where = settings_mod.resolve_with_backend(args)  # local: no real role or bucket needed
    config = TriggerConfig(
        bucket=settings.bucket,
        prefix=settings.prefix,
        pipeline_name=settings.pipeline_name,
        model_package_group=settings.model_package_group,
        region=settings.region,
        component_name=args.component_name or "",  # empty: the recipe's
        edge_target=core.resolve_args(args, ("edge_target",))["edge_target"],
        thing_group=args.thing_group or "",
        recipe=settings.recipe,
    )
    try:
        _check_rules(settings, config)
    except ClientError as exc:
        raise ValueError(f"the stack's rules for these settings: {exc}") from None
    aws = clients(local_root=where.local_root, region=settings.region)
    aws.sagemaker.on_event = Progress()
    try:
        report = watch(
            where.local_root, aws.s3, aws.sagemaker, config,
            interval_s=args.interval, once=args.once, settle_s=args.settle,
        )  # fmt: skip
    except aws.sagemaker.exceptions.ClientError as exc:
        hint = " (upsert it locally first: `robocar run --local`)" if "does not exist" in str(exc) else ""
        raise ValueError(exc.response["Error"]["Message"] + hint) from None
    if args.once:
        print(
            f"{len(report.started)} execution(s) started, {report.duplicates} already-delivered event(s), "
            f"{len(report.rollouts)} rollout(s)"
        )
    return 1 if any(r.get("status") == "failed" for r in report.rollouts) else 0
