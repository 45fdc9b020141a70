"""Neo edge targets for the definition: the compile step's own list and check, reused."""

from __future__ import annotations

from collections.abc import Sequence

from edge.settings import default_of

# The cars' default target (edge/settings.py) is always compiled: otherwise a car left at its default
# would find no artifact in any package this pipeline registers.
DEFAULT_EDGE_TARGETS = ("jetson_nano", default_of("edge_target"))


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
