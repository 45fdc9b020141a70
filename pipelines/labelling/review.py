"""``robocar label review``: not built yet (issue 19)."""

from __future__ import annotations

import argparse


def register(actions: argparse._SubParsersAction) -> None:
    actions.add_parser("review", help="(not built yet)")
