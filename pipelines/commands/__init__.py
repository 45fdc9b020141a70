"""Subcommands of ``robocar``; each module owns one group and exposes ``register(subparsers)``.

Listed in the order a user meets them. Each module imports its heavy dependencies inside its commands,
so ``robocar edge`` runs on a car without TensorFlow or the sagemaker SDK.
"""

from __future__ import annotations

import argparse


def register_all(sub: argparse._SubParsersAction) -> None:
    from pipelines.commands import data, demo, edge, endpoint, infra, label, pipeline, registry, run, trigger

    for module in (demo, data, pipeline, run, registry, endpoint, label, edge, infra, trigger):
        module.register(sub)
