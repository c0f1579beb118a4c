"""Checking detection boxes against every candidate anchor, robustly to ties between scores.

When many anchors score almost alike (random weights), a last-bit difference in the network can
make NMS keep another anchor of the same score: comparing boxes with a reference set then fails
although nothing is wrong. Instead each detection's box must be the decoded box of some anchor
whose score for the detection's class is at least the detection's (soft-NMS only lowers scores).
"""

from __future__ import annotations

import numpy as np
from detection_matching import box_iou

from efficientdet_tf.anchors import Anchors


def decoded_candidates(config, mode, class_outputs, box_outputs, image_scale):
    """Boxes [anchors, 4] in original pixels (clipped to the network input like `mode` does) and
    scores [anchors, num_classes] of every anchor, from raw outputs of one image.

    Written in NumPy after the official `decode_box_outputs`, apart from the production
    post-processing, so that a bug in its level merging or box decoding does not cancel out. The
    anchors are the production ones, which `test_anchors.py` checks against the official layout.
    """
    logits = _merge_levels(class_outputs, config.num_classes)
    regressions = _merge_levels(box_outputs, 4)
    boxes = _decode(regressions, Anchors.from_config(config).boxes)
    if mode != "per_class":
        height, width = config.image_size
        boxes = np.clip(boxes, 0, [height, width, height, width])
    return boxes * np.asarray(image_scale).reshape(()), 1 / (1 + np.exp(-logits))


def _merge_levels(level_outputs, values_per_anchor):
    """[1, H, W, anchors * values] per level -> [anchors of all levels, values], the official
    order: level by level, then row, column and anchor."""
    return np.concatenate(
        [np.asarray(output, np.float64).reshape(-1, values_per_anchor) for output in level_outputs]
    )


def _decode(regressions, anchor_boxes):
    """The official `decode_box_outputs`: (ty, tx, th, tw) against yxyx anchors."""
    anchor_boxes = np.asarray(anchor_boxes, np.float64)
    anchor_sizes = anchor_boxes[:, 2:] - anchor_boxes[:, :2]
    anchor_centres = (anchor_boxes[:, :2] + anchor_boxes[:, 2:]) / 2
    centres = regressions[:, :2] * anchor_sizes + anchor_centres
    sizes = np.exp(regressions[:, 2:]) * anchor_sizes
    return np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)


def count_on_candidates(detections, candidates, score_tolerance=1e-4, min_iou=0.99) -> int:
    """How many of (boxes, scores, 1-based classes) have the box of a candidate anchor scoring
    at least as high for their class (within the tolerance)."""
    boxes, scores, classes = (np.asarray(value) for value in detections)
    candidate_boxes, candidate_scores = candidates
    same_box = box_iou(boxes, candidate_boxes) >= min_iou  # [detections, anchors]
    class_scores = candidate_scores[:, classes.astype(int) - 1].T  # [detections, anchors]
    return int(np.sum(np.any(same_box & (class_scores >= scores[:, None] - score_tolerance), 1)))
