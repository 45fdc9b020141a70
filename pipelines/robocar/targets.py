"""Neo edge targets for the definition: the compile step's own list and check, reused."""

from __future__ import annotations

from collections.abc import Sequence

from edge.registry import DEFAULT_EDGE_TARGETS

__all__ = ["DEFAULT_EDGE_TARGETS", "parse_edge_targets"]


def parse_edge_targets(value: Sequence[str] | str) -> tuple[str, ...]:
    """``"jetson_nano,rasp4b"`` or a sequence -> validated, de-duplicated targets in the given order.

    Raises ValueError naming the unknown target (and the closest valid names).
    """
    from processing.compile import CompileError, parse_targets, target_devices

    text = value if isinstance(value, str) else ",".join(value)
    try:
        return tuple(parse_targets(text, target_devices()))
    except CompileError as exc:
        raise ValueError(str(exc)) from None
