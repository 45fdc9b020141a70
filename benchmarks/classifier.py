"""Classifier benchmark: EfficientNet-Lite0 fine-tuned from ImageNet weights vs the same net from scratch.

One run, same photos, same hyperparameters, same number of epochs; only ``use_pretrained_model``
differs. The photos are ``robocar data synth --classifier`` sets (``pipelines/synth_classes.py``) with
different seeds for train, validation and test, each turned into the trainers' image list through the
pipeline's Ground Truth reader. Each training runs ``training/classifier.py`` in the MXNet environment
local mode uses (built on first use; ``ROBOCAR_ENV_CACHE`` or ``.robocar/envs``), as its own process;
the test accuracy is measured on the exported files alone (symbol, params, ``classifier-spec.json``).

Printed: test accuracy of each and their ratio, validation accuracy, training seconds.
Goal: fine-tuned test accuracy >= 0.95 on the synthetic test split.

    python benchmarks/classifier.py [--classes 4] [--train-images 400] [--epochs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.local import environments  # noqa: E402
from pipelines.synth_classes import write_classes, write_image_list  # noqa: E402

GOAL_TEST_ACCURACY = 0.95
WORKSPACE = REPO / ".robocar"  # local mode's default workspace: its environment cache is reused


def mxnet_python() -> str:
    environment = environments.ensure_environment(
        environments.MXNET,
        environments.cache_root(WORKSPACE),
        run=lambda command: subprocess.run(command, check=True),
        note=environments.print_note,
    )
    return str(environments.environment_python(environment))


def run_mxnet(python: str, args: list[str]) -> str:
    result = subprocess.run(
        [python, *args], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def write_splits(root: Path, classes: int, sizes: dict[str, int], seed: int) -> None:
    for offset, (split, images) in enumerate(sizes.items()):
        summary = write_classes(root / split, classes, images, seed * 10 + offset)
        write_image_list(summary.manifest, root / split / "images.lst")


def train(python: str, root: Path, name: str, pretrained: bool, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    stdout = run_mxnet(
        python,
        [
            str(REPO / "training" / "classifier.py"),
            *("--train", str(root / "train"), "--validation", str(root / "validation")),
            *("--sm-model-dir", str(root / name), "--epochs", str(args.epochs)),
            *("--image_shape", f"3,{args.side},{args.side}", "--seed", str(args.seed)),
            *("--use_pretrained_model", "1" if pretrained else "0"),
        ],
    )
    seconds = time.perf_counter() - started
    validation = [float(v) for v in re.findall(r"Validation-accuracy=([0-9.]+)", stdout)]
    test = json.loads(
        run_mxnet(
            python,
            [
                "-c",
                "import sys, json\nfrom pathlib import Path\n"
                "from training.classifier import evaluate_exported\n"
                "print(json.dumps(evaluate_exported(Path(sys.argv[1]), Path(sys.argv[2]))))",
                str(root / name),
                str(root / "test"),
            ],
        ).splitlines()[-1]
    )
    return {"validation": validation, "test": test, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--train-images", type=int, default=400)
    parser.add_argument("--validation-images", type=int, default=100)
    parser.add_argument("--test-images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--side", type=int, default=64, help="network input side (a multiple of 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the data and models here instead of a temp folder")
    args = parser.parse_args(argv)
    python = mxnet_python()
    with tempfile.TemporaryDirectory(prefix="bench-classifier-") as temporary:
        root = args.keep or Path(temporary)
        sizes = {"train": args.train_images, "validation": args.validation_images, "test": args.test_images}
        write_splits(root, args.classes, sizes, args.seed)
        print(
            f"{args.classes} classes; {args.train_images} train, {args.validation_images} validation, "
            f"{args.test_images} test photos; {args.epochs} epochs at {args.side} px",
            flush=True,
        )
        results = {
            "fine-tuned": train(python, root, "fine-tuned", True, args),
            "from scratch": train(python, root, "scratch", False, args),
        }
    print("\n| model | test accuracy | validation accuracy by epoch | training s |\n|---|---:|---|---:|")
    for name, result in results.items():
        by_epoch = ", ".join(f"{v:.3f}" for v in result["validation"])
        print(f"| {name} | {result['test']:.4f} | {by_epoch} | {result['seconds']:.0f} |")
    tuned, scratch = results["fine-tuned"]["test"], results["from scratch"]["test"]
    ratio = tuned / scratch if scratch else float("inf")
    print(f"\nfine-tuned / from scratch test accuracy: {ratio:.2f}x (chance {1 / args.classes:.3f})")
    met = "met" if tuned >= GOAL_TEST_ACCURACY else "NOT met"
    print(f"goal fine-tuned test accuracy >= {GOAL_TEST_ACCURACY}: {met} ({tuned:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
