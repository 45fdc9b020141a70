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
trained at 239-270 samples/s and float32 at 347. So ``--precision auto`` (the default) times the run's
own first training steps where the CPU has native bfloat16 (runs of 100+ steps): the seeded pilot trains
them in float32 and a mixed_bfloat16 twin in turns, each taking over the weights, optimizer state and
dropout seeds, and the faster trains on; the first epoch(s) are shortened by the measured steps, so the
run trains as many steps as without measuring. The figures go to the log and to model.json
(``training.precision``). ``--precision float32|mixed_bfloat16`` skips the measurement. The measured
choice depends on timing, so force a precision where two runs must give bit-identical weights (the same
seed and the same choice do give the same weights). Weights stay float32 and the exported
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
from typing import Any, NoReturn

import numpy as np

from edge.frames import ANGLE_BINS, DEFAULT_THROTTLE_RANGE, INPUT_SCALING, THROTTLE_BINS, linear_bin
from processing.errors import add_debug_flag, run_main
from training.metrics import METRIC_DEFINITIONS, epoch_line
from training.script_mode import UsageError, parse_script_args, positive, typed
from training.spec import DEFAULT_EPOCHS, MODEL_TYPES

__all__ = ["METRIC_DEFINITIONS", "main", "parse_args", "train"]

SCRIPT_STARTED = time.perf_counter()  # the start-up phase counts from here (TensorFlow is imported later)

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
        help="compute precision while training; the exported model is float32 either way. auto: on CPUs "
        "with native bfloat16, time the first training steps in float32 and mixed_bfloat16, train on in "
        "the faster",
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


def cached_frames(images: np.ndarray, targets: Mapping[str, np.ndarray]) -> Any:
    """The split as a cached tf.data dataset of (uint8 frame, targets): what every stream of it reads."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images, dict(targets))).cache()


def make_dataset(
    frames: Any, batch_size: int, shuffle_seed: int | None, *, endless: bool = False, skip_batches: int = 0
) -> Any:
    """tf.data over ``cached_frames``: shuffled (train only, seeded, reshuffled each pass), batched,
    repeated when ``endless``, its first ``skip_batches`` batches dropped, normalised per batch (one
    vectorised op instead of one per frame), prefetched. Two datasets made with the same arguments yield
    the same batches (each shuffle starts from its seed), so one can continue where the other stopped."""
    import tensorflow as tf

    ds = frames
    if shuffle_seed is not None:
        buffer = min(int(ds.cardinality()), 20_000)
        ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if endless:
        ds = ds.repeat()
    if skip_batches:
        ds = ds.skip(skip_batches)  # before the normalisation: skipped batches cost a copy, not a multiply
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


def _epoch_printer(model_type: str, plan: EpochPlan) -> Any:
    import keras

    class EpochPrinter(keras.callbacks.Callback):
        """One scrapeable line per epoch (Keras' progress bar is noise in CloudWatch)."""

        def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            seconds = max(time.perf_counter() - self.started, 1e-9)
            print(epoch_line(epoch + 1, logs or {}, model_type, plan.samples_in(epoch) / seconds), flush=True)

    return EpochPrinter()


def _epoch_ender(plan: EpochPlan) -> Any:
    import keras

    class EpochEnder(keras.callbacks.Callback):
        """Ends an epoch after ``plan.steps_in(epoch)`` steps when that is fewer than ``fit``'s
        steps_per_epoch: Keras stops at the end of any step after which ``stop_training`` is set, then
        validates and calls on_epoch_end, where this callback (first in the list) clears the flag."""

        def on_epoch_begin(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            self.steps, self.ended_early = plan.steps_in(epoch), False

        def on_train_batch_end(self, batch: int, logs: Mapping[str, float] | None = None) -> None:
            if batch + 1 == self.steps < plan.stream.steps_per_epoch:
                self.model.stop_training = self.ended_early = True

        def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
            if self.ended_early:
                self.model.stop_training = False

    return EpochEnder()


# Precision by measurement (``--precision auto``). CPU flags do not say which precision trains faster:
# on an Intel Xeon with native BF16 (AVX512_BF16, no AMX) mixed_bfloat16 trained at 239-270 samples/s
# and float32 at 347. So ``auto`` times the run's own first training steps: the seeded pilot trains
# them in float32 and a mixed_bfloat16 twin in turns, each taking over the other's weights, optimizer
# state and dropout seeds (mixed_bfloat16 keeps float32 variables), and the faster trains on. Every
# timed step is a training step of the run, so measuring costs one more model build and graph trace
# and the slower candidate's share of the steps, not throwaway steps (it took 6.5-9.7 s on a 2-core
# Zen 5 when two throwaway pilots were timed).
MEASURE_WARMUP_STEPS = 2  # each candidate's first steps trace the graph and allocate: trained, not timed
# Candidates take turns, each keeping its best round: a burst of load elsewhere on a shared machine then
# slows one round, not one candidate. With 2 rounds of 3 steps, a burst on the shared 2-core VM once
# slowed both bfloat16 rounds (464 against 685 samples/s for float32, where bfloat16 is ~25% faster);
# the steps are the run's own, so more, shorter rounds cost nothing. Rounds are a fixed number of steps,
# not a time budget, so a seed and a choice always train the same weights.
MEASURE_ROUNDS = 4
MEASURE_ROUND_STEPS = 2
# Only runs of at least this many steps measure; shorter ones train in float32, the exported dtype.
# Measuring costs the twin's build and trace (0.4 + 1.1 s on a 2-core Zen 5, the time of ~9 steps) plus,
# where float32 wins, the bfloat16 steps' extra time; a precision 20% faster repays that in ~40 steps.
MEASURE_MIN_TRAINING_STEPS = 100
# mixed_bfloat16 must beat float32 by this share to be chosen: float32 computes exactly what is exported,
# and two measurements of the same precision differ by a few percent under load.
BFLOAT16_MIN_GAIN = 0.05
CANDIDATES = ("float32", "mixed_bfloat16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision training uses, why, and the figures it was chosen by (written to model.json)."""

    precision: str
    requested: str
    reason: str  # forced | measured | no native bfloat16 | run too short to measure
    samples_per_second: Mapping[str, float]
    seconds: float = 0.0  # what measuring took (the second build, its trace, the measured training steps)

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


def time_steps(step: Callable[[], int], clock: Callable[[], float] = time.perf_counter) -> float:
    """samples/s of one round: ``MEASURE_ROUND_STEPS`` calls of ``step``, which returns its samples."""
    started = clock()
    samples = sum(step() for _ in range(MEASURE_ROUND_STEPS))
    return samples / max(clock() - started, 1e-9)


def measure_precisions(
    steps: Mapping[str, Callable[[], int]],
    switch_to: Callable[[str], None],
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Best-round samples/s of each candidate's training step. Candidates take turns: ``switch_to(name)``
    hands the training over to ``name`` before its turn; its first turn starts with untimed warm-up."""
    best = dict.fromkeys(steps, 0.0)
    warm: set[str] = set()
    for _ in range(MEASURE_ROUNDS):
        for precision, step in steps.items():
            switch_to(precision)
            if precision not in warm:
                for _ in range(MEASURE_WARMUP_STEPS):
                    step()
                warm.add(precision)
            best[precision] = max(best[precision], time_steps(step, clock))
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
    rates = dict(measure(CANDIDATES))
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


@dataclass(frozen=True)
class BatchStream:
    """Which batch of the endless training stream is which: one pass is ``steps_per_epoch`` batches, the
    last of them partial when the frames do not divide into batches."""

    frames: int
    batch_size: int

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.frames // self.batch_size)

    def samples(self, first: int, count: int) -> int:
        """Frames in ``count`` consecutive batches from batch index ``first`` (0 = the stream's first)."""
        passes, rest = divmod(first + count, self.steps_per_epoch)
        upto = passes * self.frames + min(rest * self.batch_size, self.frames)
        passes, rest = divmod(first, self.steps_per_epoch)
        return upto - (passes * self.frames + min(rest * self.batch_size, self.frames))


@dataclass(frozen=True)
class EpochPlan:
    """Steps of each epoch when the run's first ``measured`` steps were taken before ``fit``: the first
    epoch(s) end that much earlier (each keeps at least one step), so the run trains as many steps in all
    as one that did not measure, and each epoch's samples/s counts the samples it trained."""

    stream: BatchStream
    measured: int = 0

    def steps_in(self, epoch: int) -> int:
        debt, per_epoch = self.measured, self.stream.steps_per_epoch
        for _ in range(epoch):
            debt -= min(debt, per_epoch - 1)
        return per_epoch - min(debt, per_epoch - 1)

    def first_step(self, epoch: int) -> int:
        return self.measured + sum(self.steps_in(e) for e in range(epoch))

    def samples_in(self, epoch: int) -> int:
        return self.stream.samples(self.first_step(epoch), self.steps_in(epoch))


class TakingTurns:
    """Pilots of different compute precision training one run in turns on one batch iterator, through
    the train function ``fit`` uses (so ``fit`` traces nothing again): each takes over the weights,
    optimizer state and dropout seeds of the pilot before it."""

    def __init__(self, pilots: Mapping[str, Any], batches: Any, stream: BatchStream) -> None:
        self.pilots = dict(pilots)
        self.batches = batches
        self.stream = stream
        self.active = next(iter(self.pilots))
        self.steps_taken = 0
        for pilot in self.pilots.values():
            pilot.optimizer.build(pilot.trainable_variables)  # its slots exist before a handover fills them
            pilot.make_train_function()

    def step(self) -> int:
        """One training step of the active pilot on the next batch; returns the batch's samples."""
        logs = self.pilots[self.active].train_function(self.batches)
        float(logs["loss"])  # waits for the step: the timing must not end before it does
        samples = self.stream.samples(self.steps_taken, 1)
        self.steps_taken += 1
        return samples

    def switch_to(self, precision: str) -> None:
        if precision != self.active:
            copy_training_state(self.pilots[self.active], self.pilots[precision])
            self.active = precision

    def measure(self, candidates: Sequence[str]) -> dict[str, float]:
        """A ``measure`` for ``choose_precision``: real training steps of each candidate, in turns."""
        return measure_precisions({name: self.step for name in candidates}, self.switch_to)


def training_state(model: Any) -> list[Any]:
    """Everything a training step reads and writes: weights, dropout seeds, the optimizer's slots and
    step count (``model.variables`` also holds the metrics' accumulators, which each epoch resets)."""
    return [*model.variables, *model.optimizer.variables]


def copy_training_state(source: Any, target: Any) -> None:
    """``target`` continues the training where ``source`` stopped (same architecture, any precision)."""
    for src, dst in zip(training_state(source), training_state(target), strict=True):
        if src.shape != dst.shape or src.dtype != dst.dtype:
            raise ValueError(
                f"cannot hand {src.path} {src.dtype}{src.shape} to {dst.path} {dst.dtype}{dst.shape}"
            )
        dst.assign(src)


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


class PhaseClock:
    """Wall-clock seconds of each phase of a run, for the one-line breakdown at its end."""

    def __init__(self, started: float | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.started = clock() if started is None else started
        self.last = self.started
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> float:
        """Ends ``phase`` (it began where the previous one ended); returns its seconds."""
        now = self.clock()
        seconds = now - self.last
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self.last = now
        return seconds

    def line(self) -> str:
        """``phases: start-up 2.1 s, data 0.4 s, ... (total 31.0 s)``"""
        parts = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in self.seconds.items())
        return f"phases: {parts} (total {self.last - self.started:.1f} s)"


def train(config: TrainConfig, started: float | None = None) -> dict[str, Any]:
    """Train, keep the best epoch, write the model directory; returns model.json. ``started``: when the
    process started (perf_counter), so the breakdown counts the imports as start-up."""
    phases = PhaseClock(started)
    phases.lap("start-up")
    train_arrays, train_meta = load_driving_split(config.train_dir)  # before TensorFlow: bad input fails fast
    val_arrays, val_meta = load_driving_split(config.validation_dir)
    frame_spec = train_meta["frame_spec"]
    if val_meta["frame_spec"] != frame_spec:
        raise UsageError(f"train and validation frame specs differ: {frame_spec} vs {val_meta['frame_spec']}")
    phases.lap("data")
    configure_tensorflow(config)
    import keras

    from training.export import build_model_json, write_model_dir

    phases.lap("tensorflow")
    shape = tuple(train_arrays["images"].shape[1:])
    n_train = len(train_arrays["images"])
    targets = {
        name: make_targets(config.model_type, arrays["angle"], arrays["throttle"], config.throttle_range)
        for name, arrays in (("train", train_arrays), ("validation", val_arrays))
    }
    train_frames = cached_frames(train_arrays["images"], targets["train"])
    val_ds = make_dataset(cached_frames(val_arrays["images"], targets["validation"]), config.batch_size, None)
    stream = BatchStream(n_train, config.batch_size)
    phases.lap("data")

    keras.utils.set_random_seed(config.seed)  # the same initial weights whatever the precision
    first = "float32" if config.precision == "auto" else config.precision
    pilots = {first: build_for_precision(config.model_type, shape, first)}
    # What measuring needs, built only when it will measure: a mixed_bfloat16 twin and the run's batches.
    turns: TakingTurns | None = None

    def measure(candidates: Sequence[str]) -> dict[str, float]:
        nonlocal turns
        for precision in candidates:
            if precision not in pilots:
                pilots[precision] = build_for_precision(config.model_type, shape, precision)
        for pilot in pilots.values():
            compile_model(pilot, config.model_type, config.learning_rate)
        batches = iter(make_dataset(train_frames, config.batch_size, config.seed, endless=True))
        turns = TakingTurns(pilots, batches, stream)
        return turns.measure(candidates)

    choice = choose_precision(
        config.precision,
        training_steps=config.epochs * stream.steps_per_epoch,
        measure=measure,
        native_bfloat16=has_native_bfloat16(),
    )
    precision = choice.precision
    print(f"precision: {describe_choice(choice)}", flush=True)
    if turns is not None:
        turns.switch_to(precision)
        model, measured = turns.pilots[precision], turns.steps_taken
        turns = None  # frees the measurement batches (shuffle, prefetch: +546 MB RSS on 1,500 frames) for fit
    else:
        model, measured = pilots[precision], 0
        compile_model(model, config.model_type, config.learning_rate)
    phases.lap("precision")
    plan = EpochPlan(stream, measured)
    train_ds = make_dataset(train_frames, config.batch_size, config.seed, endless=True, skip_batches=measured)
    print(
        f"training {config.model_type} pilot: {n_train} train / {len(val_arrays['images'])} validation "
        f"frames {shape}, up to {config.epochs} epochs, batch {config.batch_size}, {precision}",
        flush=True,
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, min_delta=MIN_DELTA, restore_best_weights=True
    )
    started_fit = time.perf_counter()
    # One endless iterator for all epochs (steps_per_epoch = one pass, partial batch included): Keras
    # makes a new iterator per epoch for a finite dataset, and on TensorFlow 2.21 the first batch after
    # that then stalls for about a second with both cores idle, in most epochs (measured: 5.1 s epochs
    # that take 3.9 s without the stall).
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        steps_per_epoch=stream.steps_per_epoch,
        # first: it ends the epochs that repay the measured steps before EarlyStopping looks at them
        callbacks=[_epoch_ender(plan), early_stopping, _epoch_printer(config.model_type, plan)],
        verbose=0,
        shuffle=False,  # the dataset shuffles itself, seeded
    ).history
    seconds = time.perf_counter() - started_fit + choice.seconds  # the measured steps trained the pilot too
    phases.lap("epochs")
    epochs_run = len(history["loss"])
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    summary = {
        "best_epoch": best_epoch,
        "best_val_loss": float(history["val_loss"][best_epoch - 1]),
        "train_seconds": round(seconds, 3),
        "train_samples_per_second": round(n_train * epochs_run / seconds, 1),
        "steps": int(model.optimizer.iterations.numpy()),
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
    if precision != "float32":  # same weights (kept in float32 throughout), float32 compute for serving
        if "float32" in pilots:  # the measurement's float32 twin: compiled, so it takes the optimizer too
            copy_training_state(model, pilots["float32"])
            model = pilots["float32"]
        else:
            exported = build_for_precision(config.model_type, shape, "float32")
            exported.set_weights(model.get_weights())
            model = exported
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
    write_model_dir(model, config.model_dir, model_json)
    phases.lap("export")
    print(
        f"done: epochs_run={epochs_run} best_epoch={best_epoch} best_val_loss={summary['best_val_loss']:.6g} "
        f"wall_s={seconds:.1f} samples_per_s={summary['train_samples_per_second']} -> {config.model_dir}",
        flush=True,
    )
    print(phases.line(), flush=True)
    return model_json


def main(argv: Sequence[str] | None = None, started: float | None = None) -> int:
    config = parse_args(argv)
    return run_main("train.py", lambda: _train_exit_status(config, started), debug=config.debug)


def _train_exit_status(config: TrainConfig, started: float | None) -> int:
    train(config, started)
    return 0


def exit_now(status: int) -> NoReturn:
    """Ends the process without the interpreter's teardown, which for TensorFlow took 1.3-1.7 s after
    every run (2-core Zen 5; 1.3 s even after a bare ``import tensorflow, keras``). Nothing is left to do
    by then: the model directory is written and its files closed, and the output is flushed here."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_now(main(started=SCRIPT_STARTED))
