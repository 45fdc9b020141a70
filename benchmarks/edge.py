"""Edge benchmark: each compiled artifact at batch 1 on one thread vs donkeycar's own pilot and the CPU.

What is measured, all in the same run on the same frames:

* each artifact of a compiled package (``processing/compile.py``) through ``edge.runtimes``
  (``pilot.run(frame)``: quantise the uint8 frame, invoke, dequantise, decode), one thread;
* donkeycar 5.3.0's own pilot on the same float32 weights: ``KerasLinear(interpreter=TfLite())``,
  ``pilot.run(frame)``, run in the separate virtualenv ``benchmarks/donkeycar_env.py`` makes;
* this machine's physical limit, measured, single thread: float32 from the best of numpy (BLAS) and
  ONNX Runtime ``MatMul`` on square matrices of 512 and 768; int8 from ONNX Runtime ``MatMulInteger``
  (u8 x s8, VNNI where the CPU has it) on the same shapes; best of 30 runs each. Limit fps = peak
  multiply-adds/s / the pilot's multiply-adds per frame (counted from the ONNX graph: 47.8 M for
  donkeycar's linear pilot).

Timing runs pinned to one CPU (``sched_setaffinity``; the donkeycar child inherits it). Rounds
interleave the peak and every artifact so all see the same machine load; each figure is the median of
``--repeats`` rounds of ``--seconds`` (latency percentiles come from the median round), and a share of
the limit is the median of the per-round shares. Ratios are printed against the baselines measured in
the same run, never against remembered numbers.

Usage: ``python benchmarks/edge.py`` (builds a donkeycar pilot with fixed synthetic weights and
compiles it), or ``--package DIR|model.tar.gz`` for a compiled package, or ``--model DIR`` for a
trained model folder to compile first.
"""

from __future__ import annotations

import os

# One thread for every BLAS under numpy: the peak is a single-core figure. Must precede numpy's import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE_TUBS = Path(os.environ.get("ROBOCAR_SAMPLE_TUBS", REPO / "tests" / "data" / "samples" / "tubs"))
# donkeycar's linear pilot at 120x160 (docs/design.md "Measured device facts"); used without an ONNX graph
DONKEYCAR_MACS = 47_800_000
# M = K = N of the peak matmuls: compute bound, operands in L2/L3, and short enough (< 10 ms) that the
# best of PEAK_REPEATS runs escapes the other processes on this shared machine. The best size is kept.
PEAK_SIZES = (512, 768)
PEAK_REPEATS = 30
GOALS = {"x_donkeycar": 10.0, "int8_of_limit": 0.7, "int8_angle_error": 0.03, "fp32_of_limit": 0.7}
# The int8 pilot the goals name: the fastest full-integer LiteRT artifact, as the car picks at install
# (pilot_int8.tflite or pilot_int8_wide.tflite: which wins depends on the CPU).
INT8_PILOT_RUNTIME = "litert"


# ------------------------------------------------------------------------------------ timing


def measure(
    fn: Callable[[np.ndarray], Any],
    frames: np.ndarray,
    seconds: float,
    repeats: int,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, Any]:
    """Latency of ``fn(frame)`` cycling over frames: the median of ``repeats`` rounds of ``seconds``.

    ``fps`` is 1 / median latency: at batch 1 that is the pilot's frame rate, and the median ignores
    the calls during which the shared machine's scheduler ran someone else. ``fps_wall`` (calls /
    elapsed) includes those interruptions. The round reported is the median round (by median latency),
    so one quiet or one disturbed round does not make the figure; ``rounds_fps`` lists every round.
    """
    for i in range(min(50, 10 * len(frames))):  # warm-up: caches, lazy allocations, CPU clocks
        fn(frames[i % len(frames)])
    rounds: list[dict[str, Any]] = []
    for _ in range(repeats):
        latencies: list[int] = []
        started = clock()
        deadline = started + int(seconds * 1e9)
        i = 0
        now = started
        while now < deadline:
            frame = frames[i % len(frames)]
            t0 = clock()
            fn(frame)
            now = clock()
            latencies.append(now - t0)
            i += 1
        ordered = np.sort(np.asarray(latencies)) / 1e6
        median = float(np.median(ordered))
        rounds.append({
            "fps": 1000.0 / median,
            "fps_wall": i / ((now - started) / 1e9),
            "median_ms": median,
            "p99_ms": float(ordered[int(0.99 * (len(ordered) - 1))]),
            "calls": i,
        })  # fmt: skip
    return median_round(rounds)


# ------------------------------------------------------------------------- the machine's limit


def pin_to_one_cpu() -> int | None:
    """One core enforced, not assumed: helper threads of a runtime (and the donkeycar child, which
    inherits the mask) cannot borrow a second CPU. Returns the CPU, or None where affinity is unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    _start_onnxruntime_kernels()
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def _start_onnxruntime_kernels() -> None:
    """Run one ONNX Runtime matrix product before the process is pinned.

    ONNX Runtime picks its int8 GEMM kernels once, when it first runs, and on an Intel Xeon with AMX-INT8
    it picked AMX only when it started with every CPU in the affinity mask: MatMulInteger u8s8 at
    1,020-1,210 G multiply-adds/s one core when started unpinned, 300-355 when started pinned (VNNI's
    rate). Starting it here makes the limit the CPU's, not an accident of which runtime ran first."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return
    weights = np.zeros((64, 64), np.int8)
    _ort_session(_matmul_graph("int8", weights)).run(None, {"A": np.zeros((64, 64), np.uint8)})


def _ort_session(model: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _best_seconds(fn: Callable[[], Any], repeats: int = 7) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _matmul_graph(kind: str, weights: np.ndarray) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    n = weights.shape[0]
    if kind == "float32":
        node, a_type, c_type = (
            helper.make_node("MatMul", ["A", "B"], ["C"]),
            TensorProto.FLOAT,
            TensorProto.FLOAT,
        )
    else:
        node, a_type, c_type = (
            helper.make_node("MatMulInteger", ["A", "B"], ["C"]),
            TensorProto.UINT8,
            TensorProto.INT32,
        )
    graph = helper.make_graph(
        [node],
        "peak",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("C", c_type, [n, n])],
        [numpy_helper.from_array(weights, "B")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@functools.cache
def _litert_dense_models() -> dict[tuple[str, int], bytes]:
    """One n x n fully connected layer over n rows (an n^3 matrix product), float32 and full-integer int8,
    per PEAK_SIZES; empty where TensorFlow or LiteRT is not installed (the MXNet environment)."""
    try:
        import keras
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401 - timed by measure_peaks
    except ImportError:
        return {}
    rng = np.random.default_rng(0)
    models = {}
    for n in PEAK_SIZES:
        rows = keras.Input((n,), batch_size=n)
        model = keras.Model(rows, keras.layers.Dense(n, use_bias=False)(rows))
        for kind in ("float32", "int8"):
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            if kind == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda n=n: (
                    [rng.standard_normal((n, n)).astype(np.float32)] for _ in range(2)
                )
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = converter.inference_output_type = tf.int8
            with contextlib.redirect_stdout(io.StringIO()):
                models[(kind, n)] = converter.convert()
    return models


def _litert_dense(blob: bytes) -> Callable[[], Any]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=blob, num_threads=1)
    interpreter.allocate_tensors()
    entry = interpreter.get_input_details()[0]
    rows = np.random.default_rng(1).integers(-128, 128, entry["shape"])
    interpreter.set_tensor(entry["index"], rows.astype(entry["dtype"]))
    return interpreter.invoke


def measure_peaks() -> dict[str, dict[str, float]]:
    """Single-thread multiply-adds per second (G/s) by method, best over PEAK_SIZES and PEAK_REPEATS runs;
    the best method per precision is the limit used.

    Methods: numpy and ONNX Runtime (MLAS), and XNNPACK through LiteRT where installed (it uses AMX tiles
    on CPUs that have them: 995-1,130 G/s int8 on one core of an Intel Xeon with AMX-INT8, where AVX-512
    VNNI's rate is ~330). ``pin_to_one_cpu`` starts ONNX Runtime first so that it may use AMX too."""
    rng = np.random.default_rng(0)
    fp32: dict[str, float] = {}
    int8: dict[str, float] = {}

    def keep(table: dict[str, float], method: str, macs: float, fn: Callable[[], Any]) -> None:
        table[method] = max(table.get(method, 0.0), macs / _best_seconds(fn, PEAK_REPEATS) / 1e9)

    for n in PEAK_SIZES:
        macs = float(n) ** 3
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        keep(fp32, "numpy matmul", macs, lambda a=a, b=b: a @ b)
        session = _ort_session(_matmul_graph("float32", b))
        keep(fp32, "onnxruntime MatMul", macs, lambda s=session, a=a: s.run(None, {"A": a}))
        a8 = rng.integers(0, 256, (n, n), dtype=np.uint8)
        session8 = _ort_session(_matmul_graph("int8", rng.integers(-128, 128, (n, n), dtype=np.int8)))
        keep(int8, "onnxruntime MatMulInteger u8s8", macs, lambda s=session8, a=a8: s.run(None, {"A": a}))
    for (kind, n), blob in _litert_dense_models().items():
        keep(
            fp32 if kind == "float32" else int8,
            f"litert (XNNPACK) {kind} dense",
            float(n) ** 3,
            _litert_dense(blob),
        )
    return {"float32": fp32, "int8": int8}


def count_macs(onnx_path: Path) -> int:
    """Multiply-adds per frame of an ONNX graph (Conv, MatMul, Gemm), batch 1, from inferred shapes."""
    return sum(macs_by_node(onnx_path).values())


def macs_by_node(onnx_path: Path) -> dict[str, int]:
    """Multiply-adds per frame of each Conv, MatMul and Gemm node (by node name), batch 1."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    macs: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        out = shapes.get(node.output[0])
        if out is None:
            continue
        name = node.name or f"{node.op_type}_{index}"
        if node.op_type == "Conv":
            weight = shapes[node.input[1]]  # [C_out, C_in / groups, kh, kw]
            macs[name] = int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm", "MatMulInteger"):
            # The weight's rows give the inner size: after a dynamic Reshape the input's shape is unknown.
            weight = shapes.get(node.input[1])
            inner = weight[-2] if weight and len(weight) >= 2 else shapes[node.input[0]][-1]
            macs[name] = int(np.prod(out)) * inner
    return macs


# --------------------------------------------------------------------------- donkeycar's pilot


def donkeycar_worker(argv: Sequence[str]) -> int:
    """Runs inside donkeycar's virtualenv: numpy and donkeycar only. Prints one JSON line."""
    tflite, frames_path, seconds, repeats = argv[0], argv[1], float(argv[2]), int(argv[3])
    import donkeycar
    from donkeycar.parts.interpreter import TfLite
    from donkeycar.parts.keras import KerasLinear

    frames = np.load(frames_path)
    pilot = KerasLinear(interpreter=TfLite(), input_shape=frames.shape[1:])
    pilot.load(tflite)
    result = measure(pilot.run, frames, seconds, repeats)
    result["angles"] = [float(pilot.run(f)[0]) for f in frames[:8]]
    result["donkeycar"] = donkeycar.__version__
    print(json.dumps(result))
    return 0


def donkeycar_python(explicit: str | None) -> tuple[Path | None, str]:
    """The donkeycar virtualenv's python, and how it was found (or why not)."""
    if explicit:
        return Path(explicit), "--donkeycar-python"
    if os.environ.get("ROBOCAR_DONKEYCAR_PYTHON"):
        return Path(os.environ["ROBOCAR_DONKEYCAR_PYTHON"]), "ROBOCAR_DONKEYCAR_PYTHON"
    helper = REPO / "benchmarks" / "donkeycar_env.py"
    if not helper.is_file():
        return None, "benchmarks/donkeycar_env.py does not exist"
    sys.path.insert(0, str(REPO))
    try:
        from benchmarks.donkeycar_env import DonkeycarEnvError, ensure_donkeycar_env
    except ImportError as exc:  # another engineer's module: report, do not crash the benchmark
        return None, f"benchmarks/donkeycar_env.py does not import: {exc}"
    try:
        env = ensure_donkeycar_env()  # made once (minutes), then reused
    except DonkeycarEnvError as exc:
        return None, f"the donkeycar environment cannot be made: {exc}"
    return env.python, f"benchmarks/donkeycar_env.py ({env.root})"


def run_donkeycar(
    python: Path, tflite: Path, frames: np.ndarray, seconds: float, repeats: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        frames_path = Path(tmp) / "frames.npy"
        np.save(frames_path, frames)
        command = [str(python), __file__, "--donkeycar-worker", str(tflite), str(frames_path), str(seconds)]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        result = subprocess.run(
            [*command, str(repeats)], capture_output=True, text=True, env=env, timeout=600, check=False
        )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"donkeycar's pilot did not run (exit {result.returncode}): {' | '.join(tail)}")
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------ model and frames


def sample_frames(spec: Any, limit: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Real camera frames from the sample tubs (v2 for calibration, v1 to measure), prepared for the model."""
    from edge.frames import decode_image, prepare_frame

    def load(paths: list[Path]) -> np.ndarray:
        return np.stack([prepare_frame(decode_image(p.read_bytes()), spec) for p in paths[:limit]])

    v2 = sorted((SAMPLE_TUBS / "tub_v2" / "images").glob("*.jpg"))
    v1 = sorted((SAMPLE_TUBS / "tub_v1").glob("*.jpg"))
    if v2 and v1:
        return load(v2), load(v1)
    print(f"note: no sample tubs under {SAMPLE_TUBS}: using synthetic camera-like frames", flush=True)
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (96, spec.height // 8 + 1, spec.width // 8 + 1, 3))
    frames = blocks.repeat(8, axis=1).repeat(8, axis=2)[:, : spec.height, : spec.width]
    frames = np.clip(frames + rng.integers(-12, 13, frames.shape), 0, 255).astype(np.uint8)
    return frames[:64], frames[64:]


def synthetic_pilot(images: np.ndarray) -> Any:
    """donkeycar's linear pilot, fixed seed, heads scaled so angles spread over [-1, 1] on ``images``.

    Speed does not depend on weights; quantisation error does, and an untrained network's outputs
    are all ~0, which would hide it. Pass ``--model`` to measure a trained pilot instead.
    """
    import keras

    from edge.frames import to_model_input
    from training.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model("linear", images.shape[1:])
    outputs = [np.asarray(o).reshape(-1) for o in model(to_model_input(images), training=False)]
    for layer, out, spread in zip(("n_outputs0", "n_outputs1"), outputs, (0.5, 0.2), strict=True):
        kernel, bias = model.get_layer(layer).get_weights()
        scale = spread / max(float(out.std()), 1e-6)
        model.get_layer(layer).set_weights([kernel * scale, (bias - out.mean()) * scale])
    return model


def build_package(work: Path, model_dir: Path | None) -> Path:
    """Compile (local mode) a trained model folder, or a synthetic donkeycar pilot, into ``work``."""
    sys.path.insert(0, str(REPO))
    from edge.frames import INPUT_SCALING, FrameSpec, preprocessing_record, spec_of
    from processing import compile as compile_step
    from processing.shards import write_split

    if model_dir is None:
        spec = FrameSpec()
        calibration, measured = sample_frames(spec)
        model_dir = work / "model"
        model_dir.mkdir()
        synthetic_pilot(calibration).save(model_dir / "model.keras")
        meta = {
            "model_type": "linear",
            "input": {"name": "img_in", "shape": list(spec.input_shape), "dtype": "float32",
                      "normalization": INPUT_SCALING.normalization, "frame_spec": spec.to_dict(),
                      "preprocessing": preprocessing_record(spec)},
            "outputs": [{"name": "angle"}, {"name": "throttle"}],
            "throttle_range": 0.5,
        }  # fmt: skip
        (model_dir / "model.json").write_text(json.dumps(meta))
    else:
        meta = json.loads((model_dir / "model.json").read_text())
        spec = spec_of(meta["input"], str(model_dir / "model.json"))
        calibration, measured = sample_frames(spec)
    for split, images in (("train", calibration), ("test", measured)):
        n = len(images)
        arrays = {"images": images, "angle": np.zeros(n), "throttle": np.zeros(n), "session": ["bench"] * n,
                  "tub": ["sample"] * n, "index": np.arange(n), "timestamp_ms": np.arange(n)}  # fmt: skip
        write_split(work / "splits", split, arrays, spec)
    argv = ["--model", str(model_dir), "--train", str(work / "splits" / "train"), "--test"]
    argv += [
        str(work / "splits" / "test"),
        "--output",
        str(work / "out"),
        "--targets",
        "rasp4b",
        "--mode",
        "local",
    ]
    if compile_step.main(argv) != 0:
        raise SystemExit("compilation failed (see above)")
    return extract(work / "out" / "rasp4b" / "model.tar.gz", work / "package")


def extract(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


# ------------------------------------------------------------------------------------- report


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def median_round(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The round of median latency (the lower middle one for an even count), with every round's fps."""
    middle = sorted(rounds, key=lambda r: r["median_ms"])[(len(rounds) - 1) // 2]
    return {**middle, "rounds_fps": [r["fps"] for r in rounds]}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from edge import drive, runtimes

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.package and args.package.is_file():
            package = extract(args.package, work / "package")
        elif args.package:
            package = args.package
        else:
            print("compiling the pilot (local mode) ...", flush=True)
            package = build_package(work, args.model)
        manifest = runtimes.read_manifest(package)
        spec = drive.frame_spec_of(manifest)  # as the car reads it: refused unless its digest is ours
        _, frames = sample_frames(spec)
        onnx_fp32 = package / "pilot_float32.onnx"
        macs = count_macs(onnx_fp32) if onnx_fp32.is_file() else DONKEYCAR_MACS

        pin_to_one_cpu()
        pilots = {}
        for artifact in manifest["artifacts"]:
            if runtimes.runtime_available(artifact["runtime"]):
                pilot = runtimes.load_artifact(package, artifact, manifest, threads=1)
                pilots[artifact["file"]] = (artifact, pilot)
            else:
                print(f"skipping {artifact['file']}: {artifact['runtime']} is not installed", flush=True)
        # Rounds interleave the peak and every artifact, so a busy spell on the shared machine hits them
        # alike rather than one of them. Each figure is the median of the rounds, and each artifact's
        # share of the limit is the median of its per-round shares (its fps over that round's limit).
        peak_rounds: list[dict[str, dict[str, float]]] = []
        timing_rounds: dict[str, list[dict[str, Any]]] = {file: [] for file in pilots}
        for round_number in range(1, args.repeats + 1):
            print(f"round {round_number}/{args.repeats}: peak, then {', '.join(pilots)}", flush=True)
            peak_rounds.append(measure_peaks())
            for file, (_, pilot) in pilots.items():
                timing_rounds[file].append(measure(pilot.run, frames, args.seconds, 1))
        peaks = {
            kind: {method: median([r[kind][method] for r in peak_rounds]) for method in methods}
            for kind, methods in peak_rounds[0].items()
        }
        limit_rounds = {
            kind: [max(r[kind].values()) * 1e9 / macs for r in peak_rounds] for kind in peak_rounds[0]
        }
        limit_fps = {kind: median(values) for kind, values in limit_rounds.items()}
        timings = {file: median_round(rounds) for file, rounds in timing_rounds.items()}
        rows: list[dict[str, Any]] = []
        float_angles = None
        for file, (artifact, pilot) in pilots.items():
            angles = pilot.run_batch(frames)[0]
            if file == "pilot_float32.tflite":
                float_angles = angles
            rows.append({"file": file, "runtime": artifact["runtime"], "precision": artifact["precision"],
                         "angles": angles, **timings[file]})  # fmt: skip
        donkey: dict[str, Any] | None = None
        python, how = (
            (None, "--skip-donkeycar") if args.skip_donkeycar else donkeycar_python(args.donkeycar_python)
        )
        tflite = package / "pilot_float32.tflite"
        if python is None:
            donkey_note = f"donkeycar's pilot not measured: {how}"
        elif not tflite.is_file():
            donkey_note = "donkeycar's pilot not measured: the package has no pilot_float32.tflite"
        else:
            print(f"timing donkeycar's KerasLinear + TfLite ({how}) ...", flush=True)
            try:
                donkey = run_donkeycar(python, tflite, frames, args.seconds, args.repeats)
                donkey_note = f"donkeycar {donkey.get('donkeycar')} KerasLinear(interpreter=TfLite()).run"
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                donkey_note = f"donkeycar's pilot not measured: {exc}"

    for row in rows:
        kind = "int8" if row["precision"] == "int8" else "float32"
        shares = [
            r["fps"] / limit for r, limit in zip(timing_rounds[row["file"]], limit_rounds[kind], strict=True)
        ]
        row["of_limit_rounds"] = shares
        row["of_limit"] = median(shares)
        row["x_donkeycar"] = row["fps"] / donkey["fps"] if donkey else None
        reference = float_angles if float_angles is not None else row["angles"]
        row["angle_error"] = float(np.abs(row.pop("angles") - reference).mean())
    return {
        "frames": len(frames),
        "frame_shape": list(frames.shape[1:]),
        "macs_per_frame": macs,
        "peak_gmacs": peaks,
        "limit_fps": limit_fps,
        "artifacts": rows,
        "donkeycar": donkey,
        "donkeycar_note": donkey_note,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "load_average": os.getloadavg()[0],  # the machine is shared: say how busy it was
    }


def verdicts(report: dict[str, Any]) -> list[str]:
    lines = []
    best = max(report["artifacts"], key=lambda r: r["fps"], default=None)
    if best and best["x_donkeycar"] is not None:
        ok = best["x_donkeycar"] >= GOALS["x_donkeycar"]
        lines.append(
            f"{'PASS' if ok else 'MISS'} fastest ({best['file']}) >= 10x donkeycar: "
            f"{best['x_donkeycar']:.1f}x"
        )
    int8 = int8_pilot(report)
    if int8:
        ok = int8["of_limit"] >= GOALS["int8_of_limit"] and int8["angle_error"] <= GOALS["int8_angle_error"]
        lines.append(
            f"{'PASS' if ok else 'MISS'} LiteRT int8 ({int8['file']}) >= {GOALS['int8_of_limit']:.0%} "
            "of the int8 limit "
            f"with angle error <= {GOALS['int8_angle_error']}: "
            f"{int8['of_limit']:.0%}, {int8['angle_error']:.4f}"
        )
    fp32 = [r for r in report["artifacts"] if r["precision"] == "float32"]
    if fp32:
        top = max(fp32, key=lambda r: r["of_limit"])
        ok = top["of_limit"] >= GOALS["fp32_of_limit"]
        lines.append(
            f"{'PASS' if ok else 'MISS'} best fp32 ({top['file']}) >= 70% of the fp32 limit: "
            f"{top['of_limit']:.0%}"
        )
    return lines


def int8_pilot(report: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest full-integer LiteRT artifact of the run: what the car drives once it timed them."""
    rows = [
        r for r in report["artifacts"] if r["precision"] == "int8" and r.get("runtime") == INT8_PILOT_RUNTIME
    ]
    return max(rows, key=lambda r: r["fps"], default=None)


def int8_summary(report: dict[str, Any]) -> str | None:
    """The int8 pilot against the int8 limit and donkeycar's pilot, all measured in this run."""
    int8 = int8_pilot(report)
    if int8 is None:
        return None
    rounds = " ".join(f"{share:.0%}" for share in int8.get("of_limit_rounds", []))
    donkey = report.get("donkeycar")
    versus = (
        f"{int8['x_donkeycar']:.1f}x donkeycar's pilot ({donkey['fps']:,.0f} fps)"
        if donkey and int8.get("x_donkeycar") is not None
        else "donkeycar's pilot not measured"
    )
    return (
        f"int8 pilot {int8['file']}: {int8['of_limit']:.0%} of the int8 limit "
        f"({int8['fps']:,.0f} of {report['limit_fps']['int8']:,.0f} fps; "
        f"median of {report['repeats']} rounds: {rounds}), {versus}, "
        f"angle error {int8['angle_error']:.4f}"
    )


def _timing(row: dict[str, Any]) -> str:
    return f"{row['fps']:8,.0f} {row['fps_wall']:9,.0f} {row['median_ms']:10.3f} {row['p99_ms']:8.3f}"


def print_report(report: dict[str, Any]) -> None:
    macs = report["macs_per_frame"]
    print(
        f"\n{report['frames']} frames {report['frame_shape']}, batch 1, 1 thread; "
        f"{macs / 1e6:.1f} M multiply-adds/frame; load average {report['load_average']:.1f}"
    )
    for kind, methods in report["peak_gmacs"].items():
        detail = ", ".join(f"{name} {value:.1f}" for name, value in methods.items())
        print(f"limit {kind:7s}: {report['limit_fps'][kind]:8,.0f} fps  (peak G multiply-adds/s: {detail})")
    print(
        f"\n{'artifact':22s} {'runtime':12s} {'fps':>8s} {'wall fps':>9s} {'median ms':>10s} {'p99 ms':>8s} "
        f"{'of limit':>9s} {'x donkeycar':>12s} {'angle err':>10s}"
    )
    for r in report["artifacts"]:
        x = f"{r['x_donkeycar']:.1f}x" if r["x_donkeycar"] is not None else "-"
        name = f"{r['file']:22s} {r['runtime']:12s}"
        print(f"{name} {_timing(r)} {r['of_limit']:9.0%} {x:>12s} {r['angle_error']:10.4f}")
    donkey = report["donkeycar"]
    if donkey:
        of_limit = donkey["fps"] / report["limit_fps"]["float32"]
        name = f"{'donkeycar KerasLinear':22s} {'TfLite (TF)':12s}"
        print(f"{name} {_timing(donkey)} {of_limit:9.0%} {'1.0x':>12s}")
    print(f"\n{report['donkeycar_note']}")
    line = int8_summary(report)
    if line:
        print(line)
    for line in verdicts(report):
        print(line)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/edge.py",
        description="Latency and fps of each compiled pilot artifact (batch 1, one thread) against donkeycar "
        "5.3.0's own pilot and this machine's measured single-thread limit.",
    )
    parser.add_argument(
        "--package", type=Path, help="compiled package: folder with manifest.json, or model.tar.gz"
    )
    parser.add_argument(
        "--model", type=Path, help="trained model folder (model.keras, model.json) to compile first"
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timing round (default 2)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timing rounds; the median is reported (default 5)"
    )
    parser.add_argument(
        "--donkeycar-python", help="python of donkeycar's virtualenv (default: donkeycar_env.py's)"
    )
    parser.add_argument(
        "--skip-donkeycar", action="store_true", help="do not measure (or install) donkeycar's pilot"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--donkeycar-worker"]:
        return donkeycar_worker(argv[1:])
    args = build_parser().parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1:
        build_parser().error("--seconds must be positive and --repeats at least 1")
    if args.package and not args.package.exists():
        build_parser().error(f"--package {args.package} does not exist")
    report = run_benchmark(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
