"""The frame contract of edge/frames.py: one input scaling, and a preprocessing digest that moves with it.

``INPUT_SCALING`` is the only definition of uint8 -> model input (no 255.0 or /255 elsewhere in the
code); ``preprocessing_digest`` changes with PREPROCESSING_VERSION, the scaling and every FrameSpec
field, and PREPROCESSING_VERSION is pinned to the pixels version 1 prepares, so changing what the network
sees without bumping it fails here.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import tokenize
from pathlib import Path

import numpy as np
import pytest

from edge import frames

REPO = Path(__file__).resolve().parents[2]
CODE_FOLDERS = ("edge", "processing", "training", "inference", "pipelines", "steps", "benchmarks", "infra")
SPEC = frames.FrameSpec(crop_top=40, crop_bottom=10, height=66, width=200)  # crop and resize both
# What version 1 feeds the network for SPEC on ``camera_frame()``: the prepared uint8 pixels and the
# float32 model input, as SHA-256. A change here means a model trained before would see other input:
# bump PREPROCESSING_VERSION (cars then refuse older models) and record the new digests.
VERSION_1_PIXELS = "318690b72dd712ca786319b91d88f684974c065f965456f072b0709597c203a3"
VERSION_1_INPUT = "100a8c3dfb6a8ae4957dd57a28164e1d365c665eda5cc5a79fc443e995ee0bd8"
# The digest of the default FrameSpec under version 1: canonical JSON that must not drift (a drift
# would make every car refuse every model trained before it).
VERSION_1_DEFAULT_DIGEST = "2d2765d378efa8c509253c0ccf077252aa87c8d6a3aebf0b65cf3905d5edf0c5"


def scaling_literals(source: str) -> list[str]:
    """``line: text`` of each literal that scales pixels: a float 255 (``255.0``), ``/ 255``, ``"x/255"``."""
    found = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for previous, token in zip([None, *tokens], tokens, strict=False):
        if token.type == tokenize.NUMBER:
            value = ast.literal_eval(token.string)  # 0x20, 1_000, 2j: every form Python accepts
            is_float = isinstance(value, float)
            after_slash = previous is not None and previous.type == tokenize.OP and previous.string == "/"
            if value == 255 and (is_float or after_slash):
                found.append(f"{token.start[0]}: {token.line.strip()}")
        elif token.type == tokenize.STRING:
            try:
                value = ast.literal_eval(token.string)
            except (ValueError, SyntaxError):  # f-strings and the like are no literal
                continue
            if isinstance(value, str) and value.replace(" ", "") == "x/255":
                found.append(f"{token.start[0]}: {token.line.strip()}")
    return found


def test_the_input_scaling_is_written_only_in_edge_frames():
    offenders = [
        f"{path.relative_to(REPO)}:{hit}"
        for folder in CODE_FOLDERS
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != REPO / "edge" / "frames.py"
        for hit in scaling_literals(path.read_text())
    ]
    assert offenders == [], "use edge.frames.INPUT_SCALING / to_model_input instead"


def test_the_literal_finder_finds_each_way_of_writing_the_scaling():
    source = (
        "a = x / 255.0\nb = x * (1 / 255)\nc = np.float32(1.0 / 255.0)\nd = {'normalization': 'x/255'}\n"
        "e = np.clip(x, 0, 255)\nf = np.full_like(img, 255)\n# x / 255.0 in a comment\n"
        'g = "scale 1/255 in prose"\n'
    )
    assert [hit.split(":")[0] for hit in scaling_literals(source)] == ["1", "2", "3", "4"]


def camera_frame() -> np.ndarray:
    """A deterministic camera-like frame: smooth blocks plus noise (not JPEG: the decoder is not the test)."""
    rng = np.random.default_rng(14)
    blocks = rng.integers(0, 256, (15, 20, 3)).repeat(8, axis=0).repeat(8, axis=1)
    return np.clip(blocks + rng.integers(-20, 21, blocks.shape), 0, 255).astype(np.uint8)


def test_preprocessing_version_is_pinned_to_what_it_feeds_the_network():
    prepared = frames.prepare_frame(camera_frame(), SPEC)
    model_input = frames.to_model_input(prepared)
    assert frames.PREPROCESSING_VERSION == 1
    assert hashlib.sha256(prepared.tobytes()).hexdigest() == VERSION_1_PIXELS
    assert hashlib.sha256(model_input.tobytes()).hexdigest() == VERSION_1_INPUT


def test_the_scaling_is_donkeycar_s_and_to_model_input_applies_it():
    assert (frames.INPUT_SCALING.scale, frames.INPUT_SCALING.offset) == (1 / 255, 0.0)
    assert frames.INPUT_SCALING.normalization == "x/255"
    pixels = np.arange(256, dtype=np.uint8)
    expected = pixels.astype(np.float32) * np.float32(frames.INPUT_SCALING.scale)
    np.testing.assert_array_equal(frames.to_model_input(pixels), expected)
    assert frames.to_model_input(pixels)[[0, -1]].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("dtype, shift", [("uint8", 0), ("int8", -128)])
def test_the_integer_input_quantisation_makes_the_quantised_input_the_frame(dtype, shift):
    quant = frames.INPUT_SCALING.quantization(dtype)
    pixels = np.arange(256, dtype=np.uint8)
    quantised = np.rint(frames.to_model_input(pixels) / np.float32(quant["scale"])) + quant["zero_point"]
    np.testing.assert_array_equal(quantised, pixels.astype(np.int64) + shift)
    dequantised = np.float32(quant["scale"]) * (quantised - quant["zero_point"]).astype(np.float32)
    np.testing.assert_allclose(dequantised, frames.to_model_input(pixels), atol=1e-7)


def test_the_digest_is_canonical_and_pinned():
    assert frames.preprocessing_digest(frames.FrameSpec()) == VERSION_1_DEFAULT_DIGEST
    assert frames.preprocessing_record(SPEC) == {"version": 1, "digest": frames.preprocessing_digest(SPEC)}


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(frames.FrameSpec)])
def test_the_digest_changes_with_every_frame_spec_field(field):
    base = frames.FrameSpec(crop_top=10, crop_bottom=10, height=60, width=80)
    changed = dataclasses.replace(base, **{field: getattr(base, field) + 2})
    assert frames.preprocessing_digest(changed) != frames.preprocessing_digest(base)


def test_the_digest_changes_with_the_version_and_the_scaling(monkeypatch):
    before = frames.preprocessing_digest(SPEC)
    monkeypatch.setattr(frames, "PREPROCESSING_VERSION", 2)
    assert frames.preprocessing_digest(SPEC) != before
    monkeypatch.undo()
    monkeypatch.setattr(frames, "INPUT_SCALING", frames.InputScaling(scale=1 / 127.5, offset=-1.0))
    assert frames.preprocessing_digest(SPEC) != before


def test_spec_of_accepts_this_code_s_record_and_names_both_digests_otherwise():
    holder = {"frame_spec": SPEC.to_dict(), "preprocessing": frames.preprocessing_record(SPEC)}
    assert frames.spec_of(holder) == SPEC
    other = {**holder, "preprocessing": {"version": 7, "digest": "a" * 64}}
    ours = frames.preprocessing_digest(SPEC)
    with pytest.raises(frames.PreprocessingError) as refused:
        frames.spec_of(other, "model.json")
    message = str(refused.value)
    assert f"model.json was trained with preprocessing {'a' * 64} (version 7)" in message
    assert f"(preprocessing version 1) prepares its frame_spec as {ours}" in message
    assert "update the car" in message
    with pytest.raises(frames.PreprocessingError, match="records no frame_spec"):
        frames.spec_of({"preprocessing": holder["preprocessing"]})
