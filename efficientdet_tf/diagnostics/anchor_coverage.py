"""How well the anchors cover ground-truth boxes at the network input size.

An anchor becomes positive for a box when their IoU reaches the labeler's match threshold
(`data.labeler.MATCH_THRESHOLD`). A box whose best anchor stays below it is *weakly matched*: it
trains only through the forced match of its best anchor. A box *too small for the anchors* cannot
reach the threshold with any anchor shape even when centred on it: no placement of the box
helps, only smaller anchors (min_level, anchor_scale) or a larger image_size.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from efficientdet_tf.anchors import Anchors
from efficientdet_tf.data.labeler import MATCH_THRESHOLD, pairwise_iou


def best_anchor_iou(boxes: np.ndarray, anchors: Anchors) -> np.ndarray:
    """[N] the highest IoU of each box ([N, 4] yxyx, network-input pixels) with any anchor."""
    if len(boxes) == 0:
        return np.zeros([0], np.float32)
    iou = pairwise_iou(tf.constant(boxes, tf.float32), tf.constant(anchors.boxes, tf.float32))
    return tf.reduce_max(iou, axis=1).numpy()


def anchor_shapes(anchors: Anchors) -> dict[int, np.ndarray]:
    """{level: [A, 2] height and width of the anchors at one position of that level}."""
    shapes, start = {}, 0
    for level in anchors.levels:
        first = anchors.boxes[start:start + anchors.num_anchors_per_location]
        shapes[level] = np.stack([first[:, 2] - first[:, 0], first[:, 3] - first[:, 1]], axis=1)
        start += anchors.num_anchors_per_level[level]
    return shapes


def best_centred_iou(sizes: np.ndarray, anchors: Anchors) -> np.ndarray:
    """[N] the highest IoU of boxes of `sizes` ([N, 2] height, width) with any anchor shape, box
    and anchor centred on each other: the best any placement of the box could reach."""
    shapes = np.concatenate(list(anchor_shapes(anchors).values()))  # [S, 2]
    sizes = np.asarray(sizes, np.float64).reshape(-1, 1, 2)
    overlap = np.prod(np.minimum(sizes, shapes[None]), axis=-1)
    union = np.prod(sizes, axis=-1) + np.prod(shapes, axis=-1)[None] - overlap
    iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    return iou.max(axis=1) if len(iou) else np.zeros([0])


def is_weakly_matched(best_iou: np.ndarray) -> np.ndarray:
    return best_iou < MATCH_THRESHOLD
