"""A small SSD (single-shot multibox detector, https://arxiv.org/abs/1512.02325) in MXNet Gluon.

Anchors come from ``contrib.MultiBoxPrior`` on 3 feature maps (strides 8, 16 and 32: 16x16, 8x8 and 4x4
at 128 px), each with a 3x3 class head (background + C classes per anchor) and a 3x3 box head (4
offsets per anchor). ``forward`` answers the three tensors ``contrib.MultiBoxTarget`` (training) and
``contrib.MultiBoxDetection`` (inference) take: class scores, box offsets and anchors.

Two feature extractors (``BACKBONES``; training/detector.py says why ``small`` is its default):

- ``efficientnet-lite0``: the stem and the 16 MBConv blocks of ``training/efficientnet_lite.py``
  (ImageNet weights, frozen BatchNorm statistics), tapped after blocks 5 (40 ch), 11 (112 ch) and 16
  (320 ch); its head convolution and classifier are not used;
- ``small``: 5 plain conv-BN-ReLU stages (16-32-64-96-128 channels) from random weights, 6x fewer
  multiply-adds, for when no ImageNet weights are at hand.

The loss is SSD's: softmax cross-entropy over the anchors ``MultiBoxTarget`` marks (positives by
``overlap_threshold``, and ``negative_mining_ratio`` times as many of the hardest negatives; the rest
ignored) plus smooth L1 on the positives' offsets, both divided by the number of positives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mxnet as mx
from mxnet import gluon
from mxnet.gluon import HybridBlock, nn

from training.efficientnet_lite import EfficientNetLite0

EFFICIENTNET, SMALL = "efficientnet-lite0", "small"
BACKBONES = (EFFICIENTNET, SMALL)
VARIANCES = (0.1, 0.1, 0.2, 0.2)  # MultiBoxTarget/MultiBoxDetection defaults, SSD's encoding
# EfficientNet-Lite0 blocks after which a feature map is taken: ends of stages 2, 4 and 6 (strides 8,
# 16, 32; channels 40, 112, 320).
EFFICIENTNET_TAPS = (5, 11, 16)
SMALL_CHANNELS = (16, 32, 64, 96, 128)  # one stride-2 stage each: strides 2..32
SMALL_TAPS = (2, 3, 4)  # stages whose output is a feature map (strides 8, 16, 32)


@dataclass(frozen=True)
class AnchorSpec:
    """Anchor sizes (fractions of the image side) and aspect ratios per feature map, finest first.

    Defaults cover objects from 1/10 to 3/4 of the photo: each map's two sizes s1, s2 give SSD's extra
    square sqrt(s1 * s2), as MultiBoxPrior makes len(sizes) + len(ratios) - 1 anchors per position."""

    sizes: tuple[tuple[float, ...], ...] = ((0.1, 0.2), (0.3, 0.45), (0.6, 0.8))
    ratios: tuple[tuple[float, ...], ...] = ((1.0, 2.0, 0.5),) * 3

    def per_position(self, level: int) -> int:
        return len(self.sizes[level]) + len(self.ratios[level]) - 1

    def as_dict(self) -> dict[str, list[list[float]]]:
        return {"sizes": [list(s) for s in self.sizes], "ratios": [list(r) for r in self.ratios]}


def conv_bn_relu(channels: int, stride: int) -> nn.HybridSequential:
    block = nn.HybridSequential(prefix="")
    block.add(nn.Conv2D(channels, 3, strides=stride, padding=1, use_bias=False))
    block.add(nn.BatchNorm())
    block.add(nn.Activation("relu"))
    return block


class SmallBackbone(HybridBlock):
    """Feature maps at strides 8, 16 and 32 from 5 stride-2 stages of two 3x3 convolutions."""

    def __init__(self, prefix: str = "small_") -> None:
        super().__init__(prefix=prefix)
        with self.name_scope():
            self.stages = nn.HybridSequential(prefix="")
            for channels in SMALL_CHANNELS:
                stage = nn.HybridSequential(prefix="")
                stage.add(conv_bn_relu(channels, 2), conv_bn_relu(channels, 1))
                self.stages.add(stage)

    def hybrid_forward(self, F, x):  # noqa: ANN001, ANN201, N803 - Gluon's signature
        maps = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in SMALL_TAPS:
                maps.append(x)
        return maps


class EfficientNetBackbone(HybridBlock):
    """EfficientNet-Lite0's stem and MBConv blocks, answering the maps after ``EFFICIENTNET_TAPS``."""

    def __init__(self, network: EfficientNetLite0) -> None:
        super().__init__(prefix="")
        self.network = network  # its own prefix keeps the checkpoint's parameter names

    def hybrid_forward(self, F, x):  # noqa: ANN001, ANN201, N803
        x = self.network.stem(x)
        maps = []
        for index, block in enumerate(self.network.blocks):
            x = block(x)
            if index + 1 in EFFICIENTNET_TAPS:
                maps.append(x)
            if index + 1 == EFFICIENTNET_TAPS[-1]:
                break
        return maps


class SSD(HybridBlock):
    """``x`` -> (class scores (N, A, C+1), box offsets (N, A*4), anchors (1, A, 4)).

    ``forward`` is not hybridised around the anchors: MultiBoxPrior reads only the maps' shapes, so the
    exported symbol computes anchors for whatever input side it is bound with."""

    def __init__(
        self, backbone: HybridBlock, classes: int, anchors: AnchorSpec, prefix: str = "ssd_"
    ) -> None:
        super().__init__(prefix=prefix)
        self.classes = classes
        self.anchors = anchors
        self.backbone = backbone
        with self.name_scope():
            self.class_heads = nn.HybridSequential(prefix="cls_")
            self.box_heads = nn.HybridSequential(prefix="box_")
            for level in range(len(anchors.sizes)):
                per = anchors.per_position(level)
                self.class_heads.add(nn.Conv2D(per * (classes + 1), 3, padding=1))
                self.box_heads.add(nn.Conv2D(per * 4, 3, padding=1))

    def hybrid_forward(self, F, x):  # noqa: ANN001, ANN201, N803
        scores, offsets, anchors = [], [], []
        for level, feature in enumerate(self.backbone(x)):
            # NCHW -> NHWC before flattening: anchor order is position-major, as MultiBoxPrior lays it out.
            scores.append(F.flatten(F.transpose(self.class_heads[level](feature), axes=(0, 2, 3, 1))))
            offsets.append(F.flatten(F.transpose(self.box_heads[level](feature), axes=(0, 2, 3, 1))))
            anchors.append(
                F.contrib.MultiBoxPrior(
                    feature, sizes=self.anchors.sizes[level], ratios=self.anchors.ratios[level], clip=False
                )
            )
        cls_preds = F.reshape(F.concat(*scores, dim=1), shape=(0, -1, self.classes + 1))
        return cls_preds, F.concat(*offsets, dim=1), F.concat(*anchors, dim=1)


def build_ssd(classes: int, backbone: str, anchors: AnchorSpec, side: int, weights: Any = None) -> SSD:
    """An initialised SSD for ``side`` px inputs; ``weights`` (a torch checkpoint) for EfficientNet."""
    if backbone == EFFICIENTNET:
        from training.efficientnet_lite import initialize, load_imagenet_weights

        network = EfficientNetLite0(classes=1, frozen_bn=weights is not None)
        initialize(network, side)
        if weights is not None:
            load_imagenet_weights(network, weights)
        unused = tuple(network.prefix + part for part in ("conv_head_", "bn1_", "fc_"))
        for name, param in network.collect_params().items():  # the head the SSD does not use
            if name.startswith(unused):
                param.grad_req = "null"
        features: HybridBlock = EfficientNetBackbone(network)
    elif backbone == SMALL:
        features = SmallBackbone()
        features.initialize(mx.init.Xavier(magnitude=2.0))
    else:
        raise ValueError(f"backbone {backbone!r} is not one of {BACKBONES}")
    net = SSD(features, classes, anchors)
    for head in (net.class_heads, net.box_heads):
        head.initialize(mx.init.Xavier(magnitude=2.0))
    net(mx.nd.zeros((1, 3, side, side)))
    return net


class MultiBoxLoss:
    """SSD's loss from the network's outputs and labels (N, M, 5) rows [class, xmin, ymin, xmax, ymax]
    (normalised; class -1 pads)."""

    def __init__(self, overlap_threshold: float = 0.5, negative_mining_ratio: float = 3.0) -> None:
        self.overlap_threshold = overlap_threshold
        self.negative_mining_ratio = negative_mining_ratio
        self.cross_entropy = gluon.loss.SoftmaxCrossEntropyLoss(axis=-1)
        self.smooth_l1 = gluon.loss.HuberLoss(rho=1.0)

    def targets(self, cls_preds: Any, anchors: Any, labels: Any) -> tuple[Any, Any, Any]:
        """(box targets, box mask, class targets; -1 marks an anchor left out by hard negative mining)."""
        return mx.nd.contrib.MultiBoxTarget(
            anchors,
            labels,
            cls_preds.transpose((0, 2, 1)),
            overlap_threshold=self.overlap_threshold,
            negative_mining_ratio=self.negative_mining_ratio,
            negative_mining_thresh=0.5,
            variances=VARIANCES,
        )

    def __call__(self, cls_preds: Any, loc_preds: Any, anchors: Any, labels: Any) -> tuple[Any, Any]:
        """(cross-entropy, smooth L1), each (N,) and divided by the photo's positive anchors."""
        with mx.autograd.pause():
            box_target, box_mask, cls_target = self.targets(cls_preds, anchors, labels)
        kept = cls_target >= 0
        positives = mx.nd.maximum((cls_target > 0).sum(axis=1), 1)
        cross_entropy = self.cross_entropy(cls_preds, mx.nd.maximum(cls_target, 0), kept.expand_dims(-1))
        box = self.smooth_l1(loc_preds * box_mask, box_target)
        scale = cls_preds.shape[1] / positives  # the losses average over anchors: undo, then per positive
        return cross_entropy * scale, box * (loc_preds.shape[1] / positives)


def detect(
    net: SSD, inputs: Any, *, nms_threshold: float = 0.45, nms_topk: int = 400, threshold: float = 0.01
) -> Any:
    """(N, A, 6) rows [class (-1: none), score, xmin, ymin, xmax, ymax] via contrib.MultiBoxDetection."""
    cls_preds, loc_preds, anchors = net(inputs)
    return mx.nd.contrib.MultiBoxDetection(
        mx.nd.softmax(cls_preds, axis=-1).transpose((0, 2, 1)),
        loc_preds,
        anchors,
        nms_threshold=nms_threshold,
        nms_topk=nms_topk,
        threshold=threshold,
        variances=VARIANCES,
        force_suppress=False,
    )
