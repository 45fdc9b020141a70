"""Train the DonkeyCar pilot on preprocess shards: TensorFlow script mode for a SageMaker Training job.

Reads the ``train`` and ``validation`` splits (docs/contracts.md section 2) from ``SM_CHANNEL_TRAIN`` /
``SM_CHANNEL_VALIDATION`` and writes the model directory (section 3) to ``SM_MODEL_DIR``.
Hyperparameters come as the TensorFlow container passes them: CLI flags (``--epochs 10``; values may be
JSON-quoted, ``--epochs '"10"'``) and the ``SM_HPS`` JSON; flags win over ``SM_HPS``, which wins over the
defaults. Container arguments this script does not use (``--model_dir s3://...``) are ignored.

Input: uint8 frames are cast and scaled in the tf.data graph by ``edge.frames.INPUT_SCALING``, the same
float32 operation as ``edge.frames.to_model_input`` (bit-identical; tested), so training sees exactly what
evaluation, serving and the car feed the network. model.json records the frames' preprocessing digest
(``edge.frames.preprocessing_record``), which compile and the car check.

Each epoch prints one ``epoch=N loss=... val_loss=...`` line that ``METRIC_DEFINITIONS`` scrape.

Speed: training this network on a CPU is bound by the convolutions (same kernels, same CPU-seconds per
frame as donkeycar's float32 training), not by the input pipeline. Which compute precision is faster
depends on the CPU, and its flags do not tell: on an Intel Xeon with AVX512_BF16 (no AMX) bfloat16
trained at 239-270 samples/s and float32 at 347. So ``--precision auto`` (the default) times a few
training steps of each candidate on the real model and first batch at the start (float32, plus
mixed_bfloat16 where the CPU has native bfloat16; at most ~2 s of steps each, runs of 100+ steps only)
and trains in the faster; the figures go to the log and to model.json (``training.precision``).
``--precision float32|mixed_bfloat16`` skips the measurement. The measured choice depends on timing, so
force a precision where two runs must give bit-identical weights. Weights stay float32 and the exported
model is float32 either way. XLA (``jit_compile``) was ~10x slower on this CPU; deterministic ops cost
no measurable CPU time, so they stay on (``--deterministic false`` turns them off).

    python training/train.py --train DIR/train --validation DIR/validation --sm-model-dir OUT --epochs 20
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.frames import ANGLE_BINS, DEFAULT_THROTTLE_RANGE, INPUT_SCALING, THROTTLE_BINS, linear_bin
from processing.errors import add_debug_flag, run_main
from training.metrics import METRIC_DEFINITIONS, epoch_line
from training.script_mode import UsageError, parse_script_args, positive, typed
from training.spec import DEFAULT_EPOCHS, MODEL_TYPES

__all__ = ["METRIC_DEFINITIONS", "main", "parse_args", "train"]

MIN_DELTA = 0.0005  # donkeycar's EarlyStopping(min_delta=.0005)
PRECISIONS = ("float32", "mixed_bfloat16", "auto")


@dataclass(frozen=True)
class TrainConfig:
    train_dir: Path
    validation_dir: Path
    model_dir: Path
    model_type: str = "linear"
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 128
    learning_rate: float = 0.001
    patience: int = 5
    seed: int = 42
    throttle_range: float = DEFAULT_THROTTLE_RANGE
    deterministic: bool = True
    threads: int = 0
    precision: str = "auto"
    debug: bool = False  # an internal error prints its traceback (processing/errors.py)


# --- hyperparameters ---------------------------------------------------------------------------------


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train the DonkeyCar pilot (donkeycar 5.3.0 architectures) on preprocess shards.",
        allow_abbrev=False,  # '--model' must not silently mean '--model-type'
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    paths = parser.add_argument_group("paths (SageMaker container defaults)")
    paths.add_argument(
        "--train",
        type=Path,
        default=environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"),
        help="train split folder (SM_CHANNEL_TRAIN)",
    )
    paths.add_argument(
        "--validation",
        type=Path,
        default=environ.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation"),
        help="validation split folder (SM_CHANNEL_VALIDATION)",
    )
    paths.add_argument(
        "--sm-model-dir",
        "--sm_model_dir",
        dest="model_dir",
        metavar="DIR",
        type=Path,
        default=environ.get("SM_MODEL_DIR", "/opt/ml/model"),
        help="model directory to write (SM_MODEL_DIR; the container's --model_dir S3 URI is ignored)",
    )
    hps = parser.add_argument_group("hyperparameters (flags override SM_HPS)")
    hps.add_argument(
        "--model-type",
        "--model_type",
        dest="model_type",
        type=typed(str),
        choices=MODEL_TYPES,
        default="linear",
        help="donkeycar pilot: default_n_linear or default_categorical",
    )
    hps.add_argument("--epochs", type=positive(int), default=DEFAULT_EPOCHS, help="maximum epochs")
    hps.add_argument(
        "--batch-size",
        "--batch_size",
        dest="batch_size",
        type=positive(int),
        default=128,
        help="frames per step (donkeycar's BATCH_SIZE)",
    )
    hps.add_argument(
        "--learning-rate",
        "--learning_rate",
        dest="learning_rate",
        type=positive(float),
        default=0.001,
        help="Adam learning rate",
    )
    hps.add_argument(
        "--patience",
        type=positive(int),
        default=5,
        help="epochs without val_loss improvement before stopping (the best epoch's weights are kept)",
    )
    hps.add_argument("--seed", type=typed(int), default=42, help="seeds weights, dropout and shuffling")
    hps.add_argument(
        "--throttle-range",
        "--throttle_range",
        dest="throttle_range",
        type=positive(float),
        default=DEFAULT_THROTTLE_RANGE,
        help="categorical: throttle bins cover [0, this]",
    )
    hps.add_argument(
        "--deterministic",
        type=typed(bool),
        default=True,
        help="deterministic TensorFlow ops: same seed, same weights (no measurable CPU cost here)",
    )
    hps.add_argument(
        "--threads", type=typed(int), default=0, help="TensorFlow intra-op threads (0: all cores)"
    )
    hps.add_argument(
        "--precision",
        type=typed(str),
        choices=PRECISIONS,
        default="auto",
        help="compute precision while training; the exported model is float32 either way. auto: time a "
        "few steps of float32 and (on CPUs with native bfloat16) mixed_bfloat16, train in the faster",
    )
    add_debug_flag(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> TrainConfig:
    environ = os.environ if environ is None else environ
    args = parse_script_args(build_parser(environ), argv, environ)
    return TrainConfig(
        train_dir=args.train,
        validation_dir=args.validation,
        model_dir=args.model_dir,
        model_type=args.model_type,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        patience=args.patience,
        seed=args.seed,
        throttle_range=args.throttle_range,
        deterministic=args.deterministic,
        threads=args.threads,
        precision=args.precision,
        debug=args.debug,
    )


# --- data --------------------------------------------------------------------------------------------


def load_driving_split(split_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A preprocess split with angle/throttle, or a UsageError that says what is wrong with the folder."""
    from processing.shards import ShardError, load_split

    if not split_dir.is_dir():
        raise UsageError(f"{split_dir} does not exist (expected a preprocess output split)")
    try:
        arrays, dataset = load_split(split_dir)
    except (ShardError, OSError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot read {split_dir}: {exc}") from exc
    if "angle" not in arrays or "throttle" not in arrays:
        raise UsageError(f"{split_dir} holds no angle/throttle (a classifier split?)")
    if len(arrays["images"]) == 0:
        raise UsageError(f"{split_dir} holds no frames")
    return arrays, dataset


def make_targets(
    model_type: str, angle: np.ndarray, throttle: np.ndarray, throttle_range: float
) -> dict[str, np.ndarray]:
    """Training targets by output layer: values [N,1] (linear) or donkeycar's one-hot bins (categorical)."""
    angle = np.asarray(angle, dtype=np.float32)
    throttle = np.asarray(throttle, dtype=np.float32)
    if model_type == "linear":
        return {"n_outputs0": angle.reshape(-1, 1), "n_outputs1": throttle.reshape(-1, 1)}
    angle_bins = np.stack([linear_bin(float(a), n=ANGLE_BINS, offset=1.0, r=2.0) for a in angle])
    throttle_bins = np.stack(
        [linear_bin(float(t), n=THROTTLE_BINS, offset=0.0, r=throttle_range) for t in throttle]
    )
    return {"angle_out": angle_bins, "throttle_out": throttle_bins}


def normalise(images: Any) -> Any:
    """uint8 -> model input in the TF graph through edge.frames.INPUT_SCALING: the same float32 multiply
    (and add, when the offset is not 0) as edge.frames.to_model_input."""
    import tensorflow as tf

    scaled = tf.cast(images, tf.float32) * tf.constant(INPUT_SCALING.scale, dtype=tf.float32)
    return scaled + tf.constant(INPUT_SCALING.offset, dtype=tf.float32) if INPUT_SCALING.offset else scaled


def make_dataset(
    images: np.ndarray, targets: Mapping[str, np.ndarray], batch_size: int, shuffle_seed: int | None
) -> Any:
    """tf.data: uint8 frames cached, shuffled (train only, seeded, reshuffled each epoch), batched,
    normalised per batch (one vectorised op instead of one per frame), prefetched."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, dict(targets))).cache()
    if shuffle_seed is not None:
        ds = ds.shuffle(min(len(images), 20_000), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (normalise(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


# --- training ----------------------------------------------------------------------------------------


def compile_model(model: Any, model_type: str, learning_rate: float) -> None:
    """donkeycar's losses: KerasLinear mse on both heads; KerasCategorical crossentropy weighted 0.5/0.5."""
    import keras

    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if model_type == "linear":
        model.compile(
            optimizer=optimizer,
            loss={"n_outputs0": "mse", "n_outputs1": "mse"},
            metrics={"n_outputs0": ["mae"], "n_outputs1": ["mae"]},
        )
    else:
        model.compile(
            optimizer=optimizer,
            loss={"angle_out": "categorical_crossentropy", "throttle_out": "categorical_crossentropy"},
            loss_weights={"angle_out": 0.5, "throttle_out": 0.5},
            metrics={"angle_out": ["accuracy"], "throttle_out": ["accuracy"]},
        )


def _epoch_printer(model_type: str, train_frames: int) -> Any:
    import keras

    class EpochPrinter(keras.callbacks.Callback):
        """One scrapeable line per epoch (Keras' progress bar is noise in CloudWatch)."""

        def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            seconds = max(time.perf_counter() - self.started, 1e-9)
            print(epoch_line(epoch + 1, logs or {}, model_type, train_frames / seconds), flush=True)

    return EpochPrinter()


# Precision by measurement (``--precision auto``). CPU flags do not say which precision trains faster:
# on an Intel Xeon with native BF16 (AVX512_BF16, no AMX) mixed_bfloat16 trained at 239-270 samples/s
# and float32 at 347, so ``auto`` times a few real training steps of each candidate and keeps the faster.
MEASURE_WARMUP_STEPS = 2  # the first steps trace the graph and allocate: not timed
# Candidates take turns, each keeping its best round: a burst of load elsewhere on a shared machine then
# slows one round, not one candidate. A round is 4 steps or 1 s, whichever ends first: <= 2 s each.
MEASURE_ROUNDS = 2
MEASURE_ROUND_STEPS = 4
MEASURE_ROUND_SECONDS = 1.0
# Only runs of at least this many steps measure; shorter ones train in float32, the exported dtype.
# Measuring costs two model builds and graph traces plus the timed steps: 9.7 s on a 2-core Zen 5, the
# time of ~45 training steps, which a 25% faster precision repays after ~200 steps (the demo trains 324,
# a SageMaker run of the default 100 epochs thousands); at 100 steps it repays less than half.
MEASURE_MIN_TRAINING_STEPS = 100
# mixed_bfloat16 must beat float32 by this share to be chosen: float32 computes exactly what is exported,
# and two measurements of the same precision differ by a few percent under load.
BFLOAT16_MIN_GAIN = 0.05


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision training uses, why, and the figures it was chosen by (written to model.json)."""

    precision: str
    requested: str
    reason: str  # forced | measured | no native bfloat16 | run too short to measure
    samples_per_second: Mapping[str, float]
    seconds: float = 0.0  # what measuring cost (model builds, graph traces, timed steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "chosen": self.precision,
            "requested": self.requested,
            "reason": self.reason,
            "measured_samples_per_second": {k: round(v, 1) for k, v in self.samples_per_second.items()},
            "measure_seconds": round(self.seconds, 2),
        }


def has_native_bfloat16(cpuinfo: str | None = None) -> bool:
    """AVX512-BF16 or AMX in /proc/cpuinfo; elsewhere TensorFlow emulates bfloat16 (always slower)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.is_file() else ""
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


def time_steps(
    step: Callable[[], Any], batch_size: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """samples/s of one round: ``MEASURE_ROUND_STEPS`` calls of ``step``, fewer if the round reaches
    ``MEASURE_ROUND_SECONDS`` first (at least one)."""
    started = clock()
    steps, elapsed = 0, 0.0
    while steps < MEASURE_ROUND_STEPS and (steps == 0 or elapsed < MEASURE_ROUND_SECONDS):
        step()
        steps += 1
        elapsed = clock() - started
    return steps * batch_size / max(elapsed, 1e-9)


def measure_precisions(
    steps: Mapping[str, Callable[[], Any]], batch_size: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Best-round samples/s of each candidate's training step, candidates taking turns, after warm-up."""
    for step in steps.values():
        for _ in range(MEASURE_WARMUP_STEPS):
            step()
    best = dict.fromkeys(steps, 0.0)
    for _ in range(MEASURE_ROUNDS):
        for precision, step in steps.items():
            best[precision] = max(best[precision], time_steps(step, batch_size, clock))
    return best


def choose_precision(
    requested: str,
    training_steps: int,
    measure: Callable[[Sequence[str]], Mapping[str, float]],
    native_bfloat16: bool,
    clock: Callable[[], float] = time.perf_counter,
) -> PrecisionChoice:
    """``float32``/``mixed_bfloat16`` are used as given; ``auto`` measures (``measure`` maps candidates to
    samples/s) where bfloat16 is native and the run is long enough, and keeps the faster."""
    if requested != "auto":
        return PrecisionChoice(requested, requested, "forced", {})
    if not native_bfloat16:
        return PrecisionChoice("float32", requested, "no native bfloat16", {})
    if training_steps < MEASURE_MIN_TRAINING_STEPS:
        return PrecisionChoice("float32", requested, "run too short to measure", {})
    started = clock()
    rates = dict(measure(("float32", "mixed_bfloat16")))
    faster = rates["mixed_bfloat16"] > rates["float32"] * (1 + BFLOAT16_MIN_GAIN)
    chosen = "mixed_bfloat16" if faster else "float32"
    return PrecisionChoice(chosen, requested, "measured", rates, seconds=clock() - started)


def build_for_precision(model_type: str, shape: tuple[int, ...], precision: str) -> Any:
    """The pilot with ``precision`` compute (weights float32); the global policy is float32 afterwards."""
    import keras

    from training.model import build_model

    keras.mixed_precision.set_global_policy(precision)
    try:
        return build_model(model_type, shape)
    finally:
        keras.mixed_precision.set_global_policy("float32")  # global state: the export and callers get float32


def measure_on_batch(
    config: TrainConfig, images: np.ndarray, targets: Mapping[str, np.ndarray]
) -> Callable[[Sequence[str]], dict[str, float]]:
    """A ``measure`` for ``choose_precision``: training steps of throwaway pilots on the real first batch
    (the pilot that trains is built afterwards, from the seed, so measuring leaves no trace in it)."""

    def measure(candidates: Sequence[str]) -> dict[str, float]:
        batch, batch_targets = first_batch(images, targets, config)
        shape = tuple(images.shape[1:])
        steps = {}
        for precision in candidates:
            model = build_for_precision(config.model_type, shape, precision)
            compile_model(model, config.model_type, config.learning_rate)
            steps[precision] = lambda m=model: m.train_on_batch(batch, batch_targets)
        return measure_precisions(steps, int(batch.shape[0]))

    return measure


def first_batch(images: np.ndarray, targets: Mapping[str, np.ndarray], config: TrainConfig) -> Any:
    """The first ``batch_size`` train frames through the training input pipeline, unshuffled: a real
    batch for the measurement that leaves the training dataset's shuffle order alone."""
    size = min(config.batch_size, len(images))
    head = {name: values[:size] for name, values in targets.items()}
    return next(iter(make_dataset(images[:size], head, size, None)))


def describe_choice(choice: PrecisionChoice) -> str:
    """One log line: ``float32 (measured in 6.1 s: float32 347.0, mixed_bfloat16 262.1 samples/s)``."""
    rates = ", ".join(f"{name} {rate:.1f}" for name, rate in choice.samples_per_second.items())
    if not rates:
        return f"{choice.precision} ({choice.reason})"
    return f"{choice.precision} ({choice.reason} in {choice.seconds:.1f} s: {rates} samples/s)"


def configure_tensorflow(config: TrainConfig) -> None:
    import keras
    import tensorflow as tf

    if config.threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, keep the best epoch, write the model directory; returns model.json."""
    train_arrays, train_meta = load_driving_split(config.train_dir)
    val_arrays, val_meta = load_driving_split(config.validation_dir)
    frame_spec = train_meta["frame_spec"]
    if val_meta["frame_spec"] != frame_spec:
        raise UsageError(f"train and validation frame specs differ: {frame_spec} vs {val_meta['frame_spec']}")

    configure_tensorflow(config)
    import keras

    from training.export import build_model_json, write_model_dir

    shape = tuple(train_arrays["images"].shape[1:])
    targets = {
        name: make_targets(config.model_type, arrays["angle"], arrays["throttle"], config.throttle_range)
        for name, arrays in (("train", train_arrays), ("validation", val_arrays))
    }
    # One endless iterator for all epochs (steps_per_epoch = one pass, partial batch included): Keras
    # makes a new iterator per epoch for a finite dataset, and on TensorFlow 2.21 the first batch after
    # that then stalls for about a second with both cores idle, in most epochs (measured: 5.1 s epochs
    # that take 3.9 s without the stall).
    train_ds = make_dataset(train_arrays["images"], targets["train"], config.batch_size, config.seed).repeat()
    val_ds = make_dataset(val_arrays["images"], targets["validation"], config.batch_size, None)
    n_train = len(train_arrays["images"])
    choice = choose_precision(
        config.precision,
        training_steps=config.epochs * -(-n_train // config.batch_size),
        measure=measure_on_batch(config, train_arrays["images"], targets["train"]),
        native_bfloat16=has_native_bfloat16(),
    )
    precision = choice.precision
    print(f"precision: {describe_choice(choice)}", flush=True)
    keras.utils.set_random_seed(config.seed)  # the same initial weights whether or not anything was measured
    model = build_for_precision(config.model_type, shape, precision)
    compile_model(model, config.model_type, config.learning_rate)
    print(
        f"training {config.model_type} pilot: {n_train} train / {len(val_arrays['images'])} validation "
        f"frames {shape}, up to {config.epochs} epochs, batch {config.batch_size}, {precision}",
        flush=True,
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, min_delta=MIN_DELTA, restore_best_weights=True
    )
    started = time.perf_counter()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        steps_per_epoch=-(-n_train // config.batch_size),
        callbacks=[early_stopping, _epoch_printer(config.model_type, n_train)],
        verbose=0,
        shuffle=False,  # the dataset shuffles itself, seeded
    ).history
    seconds = time.perf_counter() - started
    epochs_run = len(history["loss"])
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    summary = {
        "best_epoch": best_epoch,
        "best_val_loss": float(history["val_loss"][best_epoch - 1]),
        "train_seconds": round(seconds, 3),
        "train_samples_per_second": round(n_train * epochs_run / seconds, 1),
        "hyperparameters": {
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "patience": config.patience,
            "deterministic": config.deterministic,
            "precision": precision,
        },
        "precision": choice.to_json(),
        "frames": {"train": n_train, "validation": len(val_arrays["images"])},
    }
    model_json = build_model_json(
        model_type=config.model_type,
        frame_spec=frame_spec,
        throttle_range=config.throttle_range,
        dataset_fingerprint=train_meta.get("fingerprint"),
        history=history,
        epochs_run=epochs_run,
        seed=config.seed,
        extra={"training": summary, "validation_fingerprint": val_meta.get("fingerprint")},
    )
    if precision != "float32":  # same weights (kept in float32 throughout), float32 compute for serving
        exported = build_for_precision(config.model_type, shape, "float32")
        exported.set_weights(model.get_weights())
        model = exported
    write_model_dir(model, config.model_dir, model_json)
    print(
        f"done: epochs_run={epochs_run} best_epoch={best_epoch} best_val_loss={summary['best_val_loss']:.6g} "
        f"wall_s={seconds:.1f} samples_per_s={summary['train_samples_per_second']} -> {config.model_dir}",
        flush=True,
    )
    return model_json


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    return run_main("train.py", lambda: _train_exit_status(config), debug=config.debug)


def _train_exit_status(config: TrainConfig) -> int:
    train(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
