"""Classifier edge benchmark: each compiled artifact at batch 1 on one thread vs MXNet and the CPU's limit.

What is measured, in one run, on the same photos and the same weights:

* each artifact of a compiled classifier package (``processing/compile_classifier.py``: ONNX float32 and
  int8) through ONNX Runtime with the car's session options (``edge.runtimes.onnx_session``), one
  intra-op thread, ``session.run`` on one prepared photo [1, 3, H, W];
* where each artifact's time goes: ONNX Runtime's profiler on the same options, each node's median time
  summed by kind (1x1, depthwise, full convolutions; other operators by name), beside the share of the
  model's multiply-adds each kind holds and the rate it reaches (``--profile-runs``);
* MXNet's own forward of the trained symbol and params (``training.classifier.load_exported``:
  ``net(mx.nd.array(x)).asnumpy()``), one engine thread, the same inputs: the baseline of the ratio;
* this machine's single-thread limit (``benchmarks/edge.py``'s ``measure_peaks``: float32 and int8
  multiply-adds/s from matrix products) over the model's multiply-adds per photo (``count_macs`` of the
  float32 graph): limit fps, and each artifact's share of it;
* the int8 artifact's accuracy delta against MXNet on the test split, as the compile step measured it.

Goals (issue 16): int8 >= 5x MXNet's frames/s; int8 within 1 accuracy point of MXNet.
Timing runs pinned to one CPU; rounds interleave the peak and every runner so all see the same machine
load; each figure is the median of ``--repeats`` rounds of ``--seconds``.

Usage, from the project's environment (it writes synthetic photos there, then re-runs itself in local
mode's MXNet environment, building it once): ``python benchmarks/classifier_edge.py`` fine-tunes a
3-class model for one epoch (96 photos) and measures on 300 test photos; ``--model DIR --train DIR
--test DIR`` benchmarks a trained model on given splits.
"""

from __future__ import annotations

import os

# One thread for MXNet's engine and every BLAS: the comparison is single-core. Must precede their import.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
GOALS = {"int8_x_mxnet": 5.0, "int8_accuracy_points": 1.0}
CLASSES = 3


def in_mxnet_environment() -> bool:
    try:
        import mxnet  # noqa: F401
    except ImportError:
        return False
    return True


def rerun_in_mxnet_environment(argv: Sequence[str], script: Path | None = None) -> int:
    """``script`` (this one by default) again under the MXNet environment's Python (built once, cached)."""
    from pipelines.local import environments

    cache = Path(os.environ.get(environments.CACHE_VARIABLE) or Path.home() / ".cache" / "robocar-envs")
    environment = environments.ensure_environment(
        environments.MXNET, cache, run=lambda c: subprocess.run(c, check=True), note=print
    )
    python = str(environments.environment_python(environment))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = (script or Path(__file__)).resolve()
    return subprocess.run([python, str(script), *argv], env=env).returncode


# ------------------------------------------------------------------------------------------ inputs


def write_splits(root: Path, seed: int) -> Path:
    """Synthetic train/validation/test photos as Preprocess writes them (runs in the project's venv: the
    Ground Truth reader behind write_image_list needs jsonschema, which the MXNet environment lacks)."""
    from pipelines.synth_classes import write_classes, write_image_list

    for split, images, offset in (("train", 96, 0), ("validation", 30, 1), ("test", 300, 2)):
        summary = write_classes(root / split, classes=CLASSES, images=images, seed=seed + offset)
        write_image_list(summary.manifest, root / split / "images.lst")
    return root


def train_model(splits: Path, dest: Path, image_size: int, seed: int) -> Path:
    """A model fine-tuned one epoch from ImageNet weights on the synthetic train split."""
    command = [sys.executable, str(REPO / "training" / "classifier.py"), "--epochs", "1"]
    command += ["--image_shape", f"3,{image_size},{image_size}", "--seed", str(seed)]
    command += ["--train", str(splits / "train"), "--validation", str(splits / "validation")]
    subprocess.run([*command, "--sm-model-dir", str(dest)], check=True, stdout=subprocess.DEVNULL)
    return dest


def compile_package(model: Path, train: Path, test: Path, out: Path) -> Path:
    """The compile step's local package for one target, extracted; returns its folder."""
    from processing import compile_classifier

    argv = ["--model", str(model), "--train", str(train), "--test", str(test), "--output", str(out)]
    if compile_classifier.main([*argv, "--mode", "local", "--edge-targets", "rasp4b"]) != 0:
        raise SystemExit("compiling failed")
    extracted = out / "package"
    with tarfile.open(out / "rasp4b" / "model.tar.gz") as tar:
        tar.extractall(extracted, filter="data")
    return extracted


# ------------------------------------------------------------------------------------------ runners


def mxnet_runner(model: Path) -> Callable[[Any], Any]:
    import mxnet as mx

    from training.classifier import load_exported

    net, _, _ = load_exported(model)
    # MXNet's fastest inference path for a fixed shape: one cached graph, memory planned once.
    net.hybridize(static_alloc=True, static_shape=True)
    return lambda photo: net(mx.nd.array(photo)).asnumpy()  # asnumpy waits for MXNet's async engine


def fed_photos(
    paths: Sequence[Path], transform: Any, artifacts: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """Each photo as MXNet takes it (``"mxnet"``: float32 NCHW) and as each artifact's ``input`` says
    (``edge.photos.prepare_for``, as the car feeds it: an int8 model fed pixels gets uint8 blocks),
    prepared beforehand for all: preparing is not timed."""
    from edge.photos import prepare, prepare_for

    fed = {"mxnet": [prepare(path, transform) for path in paths]}
    fed.update(
        {f: [prepare_for(path, transform, a.get("input")) for path in paths] for f, a in artifacts.items()}
    )
    return fed


def onnx_runner(path: Path) -> Callable[[Any], Any]:
    """The artifact as the car runs it: ``edge.runtimes.onnx_session`` (its session options), one thread."""
    from edge.runtimes import onnx_session

    session = onnx_session(path, threads=1)
    name = session.get_inputs()[0].name
    return lambda photo: session.run(None, {name: photo})


# ------------------------------------------------------------------------------------------ profile


def node_kind(node: Any) -> str:
    """What a node costs as: convolutions by shape (their kernels differ), other nodes by operator."""
    import onnx

    if node.op_type not in ("Conv", "QLinearConv"):
        return node.op_type
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("group", 1) > 1:
        return "depthwise conv"
    return "1x1 conv" if list(attributes.get("kernel_shape", [])) == [1, 1] else "full conv"


def kinds_of(model_path: Path) -> dict[str, str]:
    import onnx

    graph = onnx.load(str(model_path)).graph
    return {node.name or f"{node.op_type}_{i}": node_kind(node) for i, node in enumerate(graph.node)}


def macs_by_kind(float_path: Path) -> dict[str, int]:
    """Multiply-adds per photo by node kind, from the float32 export (every artifact computes the same)."""
    from benchmarks.edge import macs_by_node

    kinds, totals = kinds_of(float_path), {}
    for name, macs in macs_by_node(float_path).items():
        kind = "Gemm" if kinds[name] in ("Gemm", "MatMul") else kinds[name]
        totals[kind] = totals.get(kind, 0) + macs
    return totals


def profile_ops(path: Path, photo: Any, runs: int) -> dict[str, float]:
    """Microseconds per photo by node kind, from ONNX Runtime's profiler on the car's session options
    (the graph as ORT optimised it: NCHWc float32, NHWC int8); each node's median over ``runs``."""
    import onnxruntime as ort

    from benchmarks.edge import median
    from edge.runtimes import onnx_session_options

    with tempfile.TemporaryDirectory() as tmp:
        options = onnx_session_options(1)
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: photo}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        kinds = kinds_of(Path(options.optimized_model_filepath))
    durations: dict[tuple[str, str], list[float]] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"].removesuffix("_kernel_time")
            kind = kinds.get(name, event["args"]["op_name"])
            durations.setdefault((name, kind), []).append(event["dur"])
    totals: dict[str, float] = {}
    for (_, kind), values in durations.items():
        totals[kind] = totals.get(kind, 0.0) + median(values)
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:

    from benchmarks.edge import count_macs, measure, measure_peaks, median, pin_to_one_cpu
    from edge.photos import PhotoTransform
    from training.classifier import read_image_list

    cpu = pin_to_one_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model:
            model, train, test = args.model, args.train, args.test
        else:
            model = train_model(args.splits, work / "model", args.image_size, args.seed)
            train, test = args.splits / "train", args.splits / "test"
        package = compile_package(model, train, test, work / "compiled")
        manifest = json.loads((package / "manifest.json").read_text())
        transform = PhotoTransform.from_dict(manifest["input_transform"])
        artifacts = {a["file"]: a for a in manifest["artifacts"]}
        fed = fed_photos([path for _, path in read_image_list(test)[:64]], transform, artifacts)
        float_file = next(f for f, a in artifacts.items() if a["precision"] == "float32")
        macs = count_macs(package / float_file)
        mac_kinds = macs_by_kind(package / float_file)
        profiles = {file: profile_ops(package / file, fed[file][0], args.profile_runs) for file in artifacts}
        runners = {"mxnet": mxnet_runner(model)}
        runners.update({file: onnx_runner(package / file) for file in artifacts})
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
        peaks: list[dict[str, dict[str, float]]] = []
        for _ in range(args.repeats):
            peaks.append(measure_peaks())
            for name, runner in runners.items():
                rounds[name].append(measure(runner, fed[name], args.seconds, 1))
    limits = [{p: max(peak[p].values()) * 1e9 / macs for p in ("float32", "int8")} for peak in peaks]
    rows = {}
    for name, measured in rounds.items():
        precision = artifacts[name]["precision"] if name in artifacts else "float32"
        fps = [r["fps"] for r in measured]
        rows[name] = {
            "fps": median(fps),
            "p99_ms": median([r["p99_ms"] for r in measured]),
            "x_mxnet": median([f / m["fps"] for f, m in zip(fps, rounds["mxnet"], strict=True)]),
            "of_limit": median([f / lim[precision] for f, lim in zip(fps, limits, strict=True)]),
            "precision": precision,
            "accuracy_delta": artifacts[name]["accuracy_delta"] if name in artifacts else None,
        }
    return {
        "machine": {"cpu": cpu_name(), "pinned_cpu": cpu, "python": platform.python_version()},
        "model": {
            "macs_per_photo": macs,
            "input": transform.as_dict()["shape"],
            "default": manifest["default"],
        },
        "limit_fps": {p: median([lim[p] for lim in limits]) for p in ("float32", "int8")},
        "profile": {"us_per_photo": profiles, "macs_by_kind": mac_kinds},
        "peak_gmacs": {p: median([max(peak[p].values()) for peak in peaks]) for p in ("float32", "int8")},
        "rows": rows,
        "rounds": args.repeats,
        "seconds": args.seconds,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ------------------------------------------------------------------------------------------ report


def print_report(report: dict[str, Any]) -> None:
    model = report["model"]
    print(f"machine: {report['machine']['cpu']}, one CPU, Python {report['machine']['python']}")
    print(
        f"model: input {model['input']}, {model['macs_per_photo'] / 1e6:.1f} M multiply-adds per photo; "
        f"limit {report['limit_fps']['float32']:,.0f} fps float32 ({report['peak_gmacs']['float32']:.1f} "
        f"G/s), {report['limit_fps']['int8']:,.0f} fps int8 ({report['peak_gmacs']['int8']:.1f} G/s)"
    )
    print(f"{'runner':<26}{'fps':>9}{'p99 ms':>9}{'x MXNet':>9}{'of limit':>10}  accuracy vs MXNet")
    for name, row in report["rows"].items():
        delta = row["accuracy_delta"]
        accuracy = (
            f"{delta['accuracy']:.4f} vs {delta['reference_accuracy']:.4f} ({delta['points']:+.2f} points, "
            f"agreement {delta['agreement']:.3f}, {delta['images']} photos)"
            if delta
            else "(the reference)"
        )
        print(
            f"{name:<26}{row['fps']:>9,.0f}{row['p99_ms']:>9.3f}{row['x_mxnet']:>8.2f}x"
            f"{100 * row['of_limit']:>9.1f}%  {accuracy}"
        )
    print_profile(report)
    int8 = next(row for row in report["rows"].values() if row["precision"] == "int8")
    speed = "met" if int8["x_mxnet"] >= GOALS["int8_x_mxnet"] else "NOT met"
    points = int8["accuracy_delta"]["points"]
    accuracy = "met" if points <= GOALS["int8_accuracy_points"] else "NOT met"
    print(f"goal int8 >= {GOALS['int8_x_mxnet']:.0f}x MXNet: {speed} ({int8['x_mxnet']:.2f}x)")
    print(f"goal int8 within {GOALS['int8_accuracy_points']:.0f} point of MXNet: {accuracy} ({points:+.2f})")


def print_profile(report: dict[str, Any]) -> None:
    """Where each artifact's time goes (profiler, median per node), against where its multiply-adds are."""
    profile = report.get("profile")
    if not profile:
        return
    macs = profile["macs_by_kind"]
    all_macs = sum(macs.values())
    for file, kinds in profile["us_per_photo"].items():
        total = sum(kinds.values())
        print(f"profile of {file}: {total:.0f} us a photo in kernels (profiler on, so slower than timed)")
        for kind, us in kinds.items():
            share = (
                f"{100 * macs[kind] / all_macs:5.1f}% of MACs, {macs[kind] / us / 1e3:6.1f} G/s"
                if kind.endswith("conv")
                else ""
            )
            print(f"  {kind:<24}{us:8.1f} us {100 * us / total:5.1f}%  {share}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a trained classifier (folder or model.tar.gz folder)")
    parser.add_argument("--train", type=Path, help="with --model: the training split (int8 calibration)")
    parser.add_argument("--test", type=Path, help="with --model: the test split (accuracy, timing photos)")
    parser.add_argument("--splits", type=Path, help=argparse.SUPPRESS)  # written by the venv side
    parser.add_argument("--image-size", type=int, default=64, help="synthetic model's crop side (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timing round (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; figures are medians (default 5)")
    parser.add_argument(
        "--profile-runs", type=int, default=500, help="ONNX Runtime profiler runs per artifact (default 500)"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.model and not (args.train and args.test):
        raise SystemExit("--model needs --train and --test")
    if not in_mxnet_environment():
        if args.model:
            return rerun_in_mxnet_environment(argv)
        with tempfile.TemporaryDirectory() as tmp:
            splits = write_splits(Path(tmp), args.seed)
            return rerun_in_mxnet_environment([*argv, "--splits", str(splits)])
    if not args.model and not args.splits:
        raise SystemExit(
            "run from the project's environment (it writes the synthetic splits), or give --model"
        )
    report = run_benchmark(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
