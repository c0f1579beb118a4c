"""The official detection loss: focal loss on classes, Huber (and optionally IoU) loss on boxes;
and the segmentation loss (softmax cross-entropy over the labelled pixels).

All parts are sums over anchors divided by the number of positive anchors + 1 of the whole
global batch (or its moving average, `positives_momentum`), so a batch split across replicas
gives, summed, exactly the single-device loss.

Written in `keras.ops` with static shapes, for a training step on any backend (inside
`tf.function` or `jax.jit`); on TensorFlow they run the same ops as the official code.
"""

from __future__ import annotations

import math
import re

import keras
from keras import ops

from efficientdet_tf.anchors import Anchors, decode_boxes, intersection_and_union, per_anchor
from efficientdet_tf.backends.base import gather_nearest
from efficientdet_tf.data import batch_labels

# Kernels of convolutions and dense layers get L2 regularization, as in the official code.
_REGULARIZED = re.compile(r".*(kernel|weight)$")


def focal_loss(logits, targets, alpha, gamma, label_smoothing, normalizer):
    """Sigmoid focal loss (Lin et al. 2017) summed over its input, divided by `normalizer`.

    The modulating factor uses the unsmoothed targets, as the official code, so that label
    smoothing does not blow the loss up.
    """
    probabilities = ops.sigmoid(logits)
    p_t = targets * probabilities + (1 - targets) * (1 - probabilities)
    alpha_factor = targets * alpha + (1 - targets) * (1 - alpha)
    modulating_factor = (1.0 - p_t) ** gamma
    smoothed = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    cross_entropy = ops.binary_crossentropy(smoothed, logits, from_logits=True)
    return ops.sum(alpha_factor * modulating_factor * cross_entropy) / normalizer


def huber_box_loss(box_outputs, box_targets, delta, normalizer):
    """Huber loss over the encoded boxes of positive anchors (targets of 0 mark negatives)."""
    mask = ops.cast(ops.not_equal(box_targets, 0.0), box_outputs.dtype)
    error = ops.abs(box_outputs - box_targets)
    quadratic = ops.minimum(error, delta)
    huber = 0.5 * quadratic**2 + delta * (error - quadratic)
    return ops.sum(huber * mask) / (normalizer * 4.0)


def iou_loss(box_outputs, box_targets, anchor_boxes, loss_type, normalizer):
    """1 - IoU (or GIoU, DIoU, CIoU) of decoded predicted and target boxes of positive anchors.

    `box_outputs` and `box_targets` [..., anchors, 4], `anchor_boxes` [anchors, 4]. Computed
    over every anchor (static shapes); a negative's output is replaced by its target, 0, so that
    it compares its anchor with itself: a finite term, dropped, and a gradient of exactly 0.
    """
    positive = ops.any(ops.not_equal(box_targets, 0.0), axis=-1)
    box_outputs = ops.where(positive[..., None], box_outputs, 0.0)
    predicted = decode_boxes(box_outputs, anchor_boxes)
    target = decode_boxes(box_targets, anchor_boxes)
    loss = ops.where(positive, 1.0 - iou_variant(predicted, target, loss_type), 0.0)
    # Normalized per box coordinate, like the Huber loss, as the official code.
    return ops.sum(loss) / (normalizer * 4.0)


# The values of hparam `iou_loss_type` (the config's schema reads them), each adding a term to
# the last.
IOU_LOSS_TYPES = ("iou", "giou", "diou", "ciou")


def iou_variant(pred, target, loss_type):
    """IoU of [..., 4] yxyx box pairs, with the GIoU / DIoU / CIoU penalty terms.

    CIoU's gradient is the official one, not the paper's: the aspect-ratio term v sends its
    gradient to the target box only (see `_aspect_ratio_gap`), so the prediction gets the DIoU
    gradient plus that of the trade-off weight v / (1 - IoU + v), which is not detached.
    """
    if loss_type not in IOU_LOSS_TYPES:
        raise ValueError(
            f"Unknown iou_loss_type {loss_type!r}; known: {', '.join(IOU_LOSS_TYPES)}.")
    p_ymin, p_xmin, p_ymax, p_xmax = (pred[..., i] for i in range(4))
    t_ymin, t_xmin, t_ymax, t_xmax = (target[..., i] for i in range(4))
    intersection, union = intersection_and_union(pred, target, math=ops)
    # keras.ops.divide_no_nan has finite gradients where it divides by 0, on every backend.
    iou = ops.divide_no_nan(intersection, union)
    if loss_type == "iou":
        return iou
    enclose_h = ops.maximum(p_ymax, t_ymax) - ops.minimum(p_ymin, t_ymin)
    enclose_w = ops.maximum(p_xmax, t_xmax) - ops.minimum(p_xmin, t_xmin)
    if loss_type == "giou":
        enclose_area = enclose_h * enclose_w
        return iou - ops.divide_no_nan(enclose_area - union, enclose_area)
    center_distance = ((p_ymin + p_ymax - t_ymin - t_ymax) / 2) ** 2 + (
        (p_xmin + p_xmax - t_xmin - t_xmax) / 2) ** 2
    diou = iou - ops.divide_no_nan(center_distance, enclose_h**2 + enclose_w**2)
    if loss_type == "diou":
        return diou
    aspect_gap = _aspect_ratio_gap(
        ops.maximum(p_ymax - p_ymin, 0.0), ops.maximum(p_xmax - p_xmin, 0.0),
        ops.maximum(t_ymax - t_ymin, 0.0), ops.maximum(t_xmax - t_xmin, 0.0))
    trade_off = ops.divide_no_nan(aspect_gap, 1 - iou + aspect_gap)
    return diou - trade_off * aspect_gap


def _aspect_ratio_gap(p_h, p_w, t_h, t_w):
    """CIoU's v = 4 / pi^2 * (atan(p_w / p_h) - atan(t_w / t_h))^2, with the official gradient.

    The official code (iou_utils.py `_get_v`) gives v no gradient to the predicted box and, to
    the target box, the paper's simplified form (the 1 / (w^2 + h^2) factor dropped):
    dv/dt_w = 8 / pi^2 * gap * t_h and dv/dt_h = -8 / pi^2 * gap * t_w. Reproduced as is; the
    paper instead applies this form to the predicted box (Zheng et al. 2020, eq. 12).

    The value is v, detached; the added term is 0 and has exactly that gradient.
    """
    gap = ops.stop_gradient(
        ops.arctan(ops.divide_no_nan(p_w, p_h)) - ops.arctan(ops.divide_no_nan(t_w, t_h)))
    v = 4 / math.pi**2 * gap**2
    fixed_h, fixed_w = ops.stop_gradient(t_h), ops.stop_gradient(t_w)
    zero_with_gradient = fixed_h * (t_w - fixed_w) - fixed_w * (t_h - fixed_h)
    return v + 8 / math.pi**2 * gap * zero_with_gradient


class PositivesNormalizer:
    """What the detection losses are divided by: the positive anchors of the global batch + 1,
    or with `positives_momentum` m in (0, 1) their moving average as the official trainers keep
    it: from 0, without bias correction, `average = m * average + (1 - m) * (positives + 1)`
    each step, the step using the updated average (official tf2/train_lib.py `_detection_loss`).

    The official average is per replica, of the replica's own positives; here it is of the
    global batch's, alike on every replica, so that N replicas train as one device (a negative
    official momentum, the cross-replica mean, is what null already does). The average is not
    checkpointed, as officially: a resumed run starts it from 0 again.
    """

    def __init__(self, momentum: float | None):
        self.momentum = momentum if momentum and momentum > 0 else None
        self.average = None
        if self.momentum is not None:
            self.average = keras.Variable(
                0.0, dtype="float32", trainable=False, autocast=False, name="moving_normalizer",
                synchronization="on_read", aggregation="mean")

    def __call__(self, num_positives):
        normalizer = ops.cast(num_positives, "float32") + 1.0
        if self.average is None:
            return normalizer
        updated = self.momentum * self.average + (1.0 - self.momentum) * normalizer
        self.average.assign(updated)
        return updated


class DetectionLoss:
    """The loss parts of one batch: cls_loss, box_loss, iou_loss (when configured), total."""

    def __init__(self, config):
        self.config = config
        self.normalizer = PositivesNormalizer(config.positives_momentum)
        self.levels = range(config.min_level, config.max_level + 1)
        self.anchor_boxes = None
        if config.iou_loss_type:
            anchors = Anchors.from_config(config)
            self.anchor_boxes = anchors.split_levels(anchors.boxes)

    def __call__(self, class_outputs, box_outputs, labels, num_positives) -> dict:
        """`num_positives`: positive anchors in the global batch (see `PositivesNormalizer`)."""
        config = self.config
        normalizer = self.normalizer(num_positives)
        cls_losses, box_losses, iou_losses = [], [], []
        for index, level in enumerate(self.levels):
            logits = ops.cast(class_outputs[index], "float32")
            boxes = ops.cast(box_outputs[index], "float32")
            class_targets = labels[batch_labels.class_targets(level)]
            one_hot = ops.one_hot(class_targets, config.num_classes, dtype="float32")
            one_hot = ops.reshape(one_hot, (-1, *logits.shape[1:]))
            cls_losses.append(focal_loss(
                logits, one_hot, config.alpha, config.gamma, config.label_smoothing, normalizer))
            box_targets = labels[batch_labels.box_targets(level)]
            box_losses.append(huber_box_loss(boxes, box_targets, config.delta, normalizer))
            if self.anchor_boxes is not None:
                iou_losses.append(iou_loss(
                    per_anchor(boxes, 4), per_anchor(box_targets, 4), self.anchor_boxes[index],
                    config.iou_loss_type, normalizer))
        parts = {"cls_loss": sum(cls_losses), "box_loss": sum(box_losses)}
        total = parts["cls_loss"] + config.box_loss_weight * parts["box_loss"]
        if iou_losses:
            parts["iou_loss"] = sum(iou_losses)
            total += config.iou_loss_weight * parts["iou_loss"]
        parts["det_loss"] = total
        return parts


def segmentation_cross_entropy(logits, masks, ignore_label: int) -> tuple:
    """Softmax cross-entropy of `logits` [B, h, w, classes] against `masks` [B, H, W] (class ids,
    any integer dtype), summed over the pixels whose label is not `ignore_label`, and the number
    of those pixels: the loss is the sum over the number (of the global batch, in training).

    The masks come at the network's input size; they are brought to the logits' size here with
    nearest-neighbour sampling (half-pixel centres, as `tf.image.resize`), so labels stay class
    ids. The official demo (efficientdet/tf2/segmentation.py) instead resized its masks to the
    head's 128x128 in the input pipeline (bilinear, then used as labels) and had no ignore label.
    """
    masks = gather_nearest(masks, logits.shape[1:3], half_pixel_centers=True)
    masks = ops.cast(masks, "int32")
    labelled = ops.not_equal(masks, ignore_label)
    cross_entropy = ops.sparse_categorical_crossentropy(
        ops.where(labelled, masks, 0), ops.cast(logits, "float32"), from_logits=True)
    weights = ops.cast(labelled, "float32")
    return ops.sum(cross_entropy * weights), ops.sum(weights)


def l2_regularization(variables, weight_decay: float):
    """weight_decay * sum of squares / 2 of every conv and dense kernel (official `reg_l2_loss`)."""
    kernels = [v for v in variables if _REGULARIZED.match(v.path)]
    return weight_decay * sum(ops.sum(ops.square(ops.cast(v, "float32"))) / 2 for v in kernels)
