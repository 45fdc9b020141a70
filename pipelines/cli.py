"""The one console script, ``robocar``: each area registers its own subcommands here.

Imports of heavy modules (sagemaker, TensorFlow) happen inside the commands, so that ``robocar edge``
works on a device that has neither.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robocar",
        description="Build, run and deploy the robocar SageMaker Pipeline: DonkeyCar tubs in, pilot out.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from pipelines import commands

    commands.register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
