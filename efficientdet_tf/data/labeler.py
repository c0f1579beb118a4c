"""Anchor labels: the official AnchorLabeler (IoU ArgMaxMatcher + Faster R-CNN box coder) in TF ops.

Every anchor is matched to the ground-truth box it overlaps most when that IoU is >= 0.5, else it is
background; then each ground-truth box also takes its own best anchor, whatever the IoU
(force_match_for_each_row), so that no object goes without a positive. With the official equal
matched / unmatched thresholds there are no ignored anchors.

Targets per level l, for a feature map of height H_l, width W_l and A anchors per location:
  cls_targets[l]: int32 [H_l, W_l, A], the 0-based class (class id - 1) of matched anchors, -1 for
    background.
  box_targets[l]: float32 [H_l, W_l, A * 4], `encode_boxes` of the matched box ([ty, tx, th, tw]
    per anchor), 0 for background.
  num_positives: float32 scalar, number of matched anchors.
"""

from __future__ import annotations

import tensorflow as tf

from efficientdet_tf.anchors import Anchors, encode_boxes, intersection_and_union

# IoU at which an anchor becomes positive (official AnchorLabeler match_threshold).
MATCH_THRESHOLD = 0.5


def pairwise_iou(boxes_a: tf.Tensor, boxes_b: tf.Tensor) -> tf.Tensor:
    """[N, 4] x [M, 4] yxyx boxes -> [N, M] intersection over union (0 where the union is 0)."""
    intersection, union = intersection_and_union(boxes_a[:, tf.newaxis], boxes_b[tf.newaxis])
    return tf.math.divide_no_nan(intersection, union)


def match_anchors(iou: tf.Tensor, threshold: float = MATCH_THRESHOLD) -> tf.Tensor:
    """[N boxes, M anchors] IoU -> int32 [M]: the matched box of each anchor, -1 for none.

    When several boxes have the same best anchor, the lowest box index takes it (as the official
    one-hot argmax does).
    """
    num_boxes, num_anchors = tf.shape(iou)[0], tf.shape(iou)[1]

    def match_nonempty():
        best_box = tf.argmax(iou, axis=0, output_type=tf.int32)
        matches = tf.where(tf.reduce_max(iou, axis=0) >= threshold, best_box, -1)
        best_anchor_of_box = tf.argmax(iou, axis=1, output_type=tf.int32)
        forced_box = tf.math.unsorted_segment_min(
            tf.range(num_boxes), best_anchor_of_box, num_segments=num_anchors
        )
        return tf.where(forced_box < num_boxes, forced_box, matches)

    return tf.cond(
        num_boxes > 0, match_nonempty, lambda: tf.fill([num_anchors], tf.constant(-1, tf.int32))
    )


class AnchorLabeler:
    """Classification and box-regression targets of every anchor for one image."""

    def __init__(self, anchors: Anchors, match_threshold: float = MATCH_THRESHOLD):
        self.anchors = anchors
        self.match_threshold = match_threshold
        self._anchor_boxes = tf.constant(anchors.boxes, tf.float32)

    @classmethod
    def from_config(cls, config) -> "AnchorLabeler":
        return cls(Anchors.from_config(config))

    def label(
        self, boxes: tf.Tensor, classes: tf.Tensor
    ) -> tuple[dict[int, tf.Tensor], dict[int, tf.Tensor], tf.Tensor]:
        """Targets for pixel boxes [N, 4] (yxyx, network-input pixels) with 1-based classes [N].

        Returns (cls_targets, box_targets, num_positives) as described in the module docstring.
        """
        boxes = tf.cast(boxes, tf.float32)
        matches = match_anchors(pairwise_iou(boxes, self._anchor_boxes), self.match_threshold)
        is_positive = matches >= 0
        # Unmatched anchors gather a placeholder box of class 0 appended after the real ones.
        matched = tf.where(is_positive, matches, tf.shape(boxes)[0])
        classes = tf.concat([tf.cast(classes, tf.int32), [0]], axis=0)
        boxes = tf.concat([boxes, [[0.0, 0.0, 1.0, 1.0]]], axis=0)
        cls_targets = tf.gather(classes, matched) - 1
        encoded = encode_boxes(tf.gather(boxes, matched), self._anchor_boxes)
        box_targets = tf.where(is_positive[:, None], encoded, 0.0)
        num_positives = tf.reduce_sum(tf.cast(is_positive, tf.float32))
        return (self.anchors.level_maps(cls_targets), self.anchors.level_maps(box_targets),
                num_positives)
