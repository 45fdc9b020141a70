"""Subcommands of ``robocar``; each module owns one group and exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse


def register_all(sub: argparse._SubParsersAction) -> None:
    from pipelines.commands import pipeline

    pipeline.register(sub)
    from pipelines.commands import edge

    edge.register(sub)
    from pipelines.commands import data

    data.register(sub)
    from pipelines.commands import infra, trigger

    infra.register(sub)
    trigger.register(sub)
    from pipelines.commands import registry, run

    run.register(sub)
    registry.register(sub)
    from pipelines.commands import demo

    demo.register(sub)
