"""Checking detection boxes against every candidate anchor, robustly to ties between scores.

When many anchors score almost alike (random weights), a last-bit difference in the network can
make NMS keep another anchor of the same score: comparing boxes with a reference set then fails
although nothing is wrong. Instead each detection's box must be the decoded box of some anchor
whose score for the detection's class is at least the detection's (soft-NMS only lowers scores).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from detection_matching import box_iou
from efficientdet_tf.anchors import decode_boxes
from efficientdet_tf.inference.postprocess import Postprocessor


def decoded_candidates(config, mode, class_outputs, box_outputs, image_scale):
    """Boxes [anchors, 4] in original pixels (clipped to the network input like `mode` does) and
    scores [anchors, num_classes] of every anchor, from raw outputs of one image."""
    postprocessor = Postprocessor(config, mode)
    logits, regressions = postprocessor.merge_levels(class_outputs, box_outputs)
    boxes = decode_boxes(regressions[0], postprocessor.anchors.boxes).numpy()
    if mode != "per_class":
        height, width = config.image_size
        boxes = np.clip(boxes, 0, [height, width, height, width])
    return boxes * np.asarray(image_scale).reshape(()), tf.sigmoid(logits[0]).numpy()


def count_on_candidates(detections, candidates, score_tolerance=1e-4, min_iou=0.99) -> int:
    """How many of (boxes, scores, 1-based classes) have the box of a candidate anchor scoring
    at least as high for their class (within the tolerance)."""
    boxes, scores, classes = (np.asarray(value) for value in detections)
    candidate_boxes, candidate_scores = candidates
    same_box = box_iou(boxes, candidate_boxes) >= min_iou  # [detections, anchors]
    class_scores = candidate_scores[:, classes.astype(int) - 1].T  # [detections, anchors]
    return int(np.sum(np.any(same_box & (class_scores >= scores[:, None] - score_tolerance), 1)))
