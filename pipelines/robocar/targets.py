"""Neo edge targets: names checked against the CreateCompilationJob ``TargetDevice`` enum."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

DEFAULT_EDGE_TARGETS = ("jetson_nano", "rasp4b")
TARGETS_FILE = Path(__file__).resolve().parents[2] / "processing" / "neo_targets.json"


def target_devices() -> frozenset[str]:
    """Neo's TargetDevice names, from the copy the compile step ships (kept equal to botocore's by a test)."""
    return frozenset(json.loads(TARGETS_FILE.read_text())["target_devices"])


def parse_edge_targets(value: Sequence[str] | str) -> tuple[str, ...]:
    """``"jetson_nano,rasp4b"`` or a sequence -> validated, de-duplicated targets in the given order."""
    valid = target_devices()
    names = value.split(",") if isinstance(value, str) else list(value)
    targets = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not targets:
        raise ValueError("EdgeTargets is empty: name at least one Neo target device, e.g. jetson_nano")
    unknown = [t for t in targets if t not in valid]
    if unknown:
        raise ValueError(
            f"unknown Neo target device(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    return targets
