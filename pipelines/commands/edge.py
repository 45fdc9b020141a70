"""``robocar edge``: the device commands, defined in ``edge.cli`` (argparse only at import time).

The handlers import the agent, the drive loop and the runtimes when they run, so ``robocar edge`` needs
neither the sagemaker SDK nor TensorFlow; on the car, ``robocar-edge`` is the same commands.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from edge import cli

    parser = sub.add_parser(
        "edge",
        help="the car: pull the approved pilot, drive with it, Greengrass component",
        description="The device side: pull the newest approved pilot (verified, smoke-tested, rolled back "
        "on failure), "
        "drive with it (fps and latency live), and package it as a Greengrass v2 component.",
    )
    cli.configure(parser)
