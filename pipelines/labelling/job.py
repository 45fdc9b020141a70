"""``robocar label job``: not built yet (issue 19)."""

from __future__ import annotations

import argparse


def register(actions: argparse._SubParsersAction) -> None:
    actions.add_parser("job", help="(not built yet)")
