"""``robocar label predict|review|job|land``: the auto-labelling loop (docs/labelling.md).

An approved classifier or detector pre-labels new images (``predict``), a person verifies or adjusts the
pre-labels in a local web page (``review``) or in a Ground Truth job on AWS (``job``), and the reviewed
manifest, landed under the raw-data prefix (``land``), starts the recipe's pipeline again.
Each action lives in its own module under ``pipelines/labelling/``; this module only wires the CLI.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("label", help="pre-label new images with an approved model, review, retrain")
    actions = parser.add_subparsers(dest="label_command", metavar="ACTION", required=True)
    from pipelines.labelling import job, land, predict, review

    for module in (predict, review, job, land):
        module.register(actions)
