"""Camera images -> prepared frames (``edge.frames``), with a rejection reason for each one that fails.

This is the per-frame hot path of preprocessing and what the process pool runs: read the file, decode
(``decode_image``), check the camera size, crop/resize (``prepare_frame``). Frames go straight into one
preallocated array so a chunk costs one allocation, not one per frame.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from edge.frames import FrameError, FrameSpec, decode_image, prepare_frame


def load_frames(paths: Sequence[str], spec: FrameSpec) -> tuple[np.ndarray, list[str | None]]:
    """(frames uint8 [k, H, W, 3] of the images that passed, reason or None for each path in order)."""
    out = np.empty((len(paths), *spec.input_shape), dtype=np.uint8)
    reasons: list[str | None] = []
    camera = (spec.camera_height, spec.camera_width)
    kept = 0
    for path in paths:
        name = os.path.basename(path)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            reasons.append(f"image missing: {name}")
            continue
        except OSError as exc:
            reasons.append(f"image unreadable: {name}: {exc.strerror or exc}")
            continue
        try:
            image = decode_image(data)
        except FrameError as exc:
            reasons.append(f"image unreadable: {name}: {exc}")
            continue
        if image.shape[:2] != camera:
            reasons.append(
                f"image wrong size: {name} is {image.shape[1]}x{image.shape[0]}, "
                f"expected {spec.camera_width}x{spec.camera_height}"
            )
            continue
        try:
            out[kept] = prepare_frame(image, spec)
        except FrameError as exc:  # defensive: decode_image always returns RGB of the checked size
            reasons.append(f"image unreadable: {name}: {exc}")
            continue
        kept += 1
        reasons.append(None)
    return out[:kept], reasons
