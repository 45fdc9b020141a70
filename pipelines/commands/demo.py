"""``robocar demo``: the main job, end to end on this machine (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from pipelines.demo import DEFAULT_WORKSPACE, DemoConfig

    defaults = DemoConfig()
    parser = sub.add_parser(
        "demo",
        help="the whole pipeline locally on synthetic tubs, then the car drives with the approved model",
        description="Synthetic DonkeyCar tubs -> `robocar run --local` (preprocess, train, evaluate, "
        "compile, register) -> approve -> `robocar edge pull/run` with the int8 artifact -> a summary; "
        "then the classifier and the detection recipes the same way on synthetic labelled photos. "
        "No AWS account, no Docker. A second run reuses the cached steps.",
    )
    parser.add_argument(
        "--workspace", type=Path, default=DEFAULT_WORKSPACE, help=f"(default: {DEFAULT_WORKSPACE})"
    )
    parser.add_argument(
        "--frames", type=int, default=defaults.frames, help="synthetic frames (default: %(default)s)"
    )
    parser.add_argument(
        "--sessions", type=int, default=defaults.sessions, help="driving sessions (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="synthetic data seed (default: %(default)s)"
    )
    parser.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="training epochs (default: %(default)s)"
    )
    parser.add_argument(
        "--drive-frames",
        type=int,
        default=defaults.drive_frames,
        help="frames the car drives (default: %(default)s)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra pipeline parameter, repeatable",
    )
    parser.add_argument(
        "--pilot-only", action="store_true", help="run the pilot recipe only (skip the image recipes)"
    )
    parser.add_argument(
        "--no-detection", action="store_true", help="skip the detection recipe (pilot and classifier only)"
    )
    parser.add_argument(
        "--no-labelling",
        action="store_true",
        help="skip the auto-labelling loop (pre-label new photos, review, land, retrain the classifier)",
    )
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from pipelines.demo import DemoConfig, main

    return main(
        DemoConfig(
            workspace=args.workspace,
            frames=args.frames,
            sessions=args.sessions,
            seed=args.seed,
            epochs=args.epochs,
            drive_frames=args.drive_frames,
            parameters=tuple(args.param),
            classifier=not args.pilot_only,
            labelling=not args.no_labelling,
            detection=not (args.pilot_only or args.no_detection),
        )  # fmt: skip
    )
