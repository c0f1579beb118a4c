"""Anchor labels against hand-computed cases (official AnchorLabeler semantics)."""

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.anchors import Anchors
from efficientdet_tf.config import get_config
from efficientdet_tf.data.labeler import AnchorLabeler, match_anchors, pairwise_iou


@pytest.fixture(scope="module")
def labeler():
    return AnchorLabeler.from_config(get_config("efficientdet-d0", "num_classes=3,image_size=64"))


def flat(per_level: dict, anchors: Anchors) -> np.ndarray:
    """{level: [H, W, A * k]} -> [num_anchors, k] in anchor order."""
    k = per_level[anchors.min_level].shape[-1] // anchors.num_anchors_per_location
    return np.concatenate([per_level[level].numpy().reshape(-1, k) for level in anchors.levels])


def test_pairwise_iou_of_hand_computed_boxes():
    boxes_a = tf.constant([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    boxes_b = tf.constant(
        [[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [20.0, 20.0, 30.0, 30.0]]
    )
    expected = [[1.0, 25.0 / 175.0, 0.0], [0.0, 0.0, 0.0]]
    np.testing.assert_allclose(pairwise_iou(boxes_a, boxes_b).numpy(), expected, rtol=1e-6)


def test_box_equal_to_an_anchor_gets_zero_box_target_and_its_class(labeler):
    anchors = labeler.anchors
    index = 100
    box = anchors.boxes[index]
    cls_targets, box_targets, num_positives = labeler.label(tf.constant([box]), tf.constant([3]))
    cls_flat, box_flat = flat(cls_targets, anchors), flat(box_targets, anchors)
    assert cls_flat[index, 0] == 2  # class id 3 -> 0-based 2
    np.testing.assert_allclose(box_flat[index], 0.0, atol=1e-6)
    positives = np.flatnonzero(cls_flat[:, 0] >= 0)
    assert num_positives.numpy() == len(positives)
    # Every other positive overlaps the box by at least 0.5; background anchors have no target.
    ious = pairwise_iou(tf.constant([box]), tf.constant(anchors.boxes)).numpy()[0]
    assert np.all(ious[positives] >= 0.5)
    assert np.all(ious[cls_flat[:, 0] < 0] < 0.5)
    np.testing.assert_array_equal(box_flat[cls_flat[:, 0] < 0], 0.0)


def test_box_without_a_good_anchor_still_gets_its_best_anchor(labeler):
    anchors = labeler.anchors
    box = np.array([[20.0, 20.0, 22.0, 23.0]], np.float32)  # far smaller than any anchor
    ious = pairwise_iou(tf.constant(box), tf.constant(anchors.boxes)).numpy()[0]
    assert ious.max() < 0.5
    cls_targets, box_targets, num_positives = labeler.label(tf.constant(box), tf.constant([1]))
    cls_flat = flat(cls_targets, anchors)[:, 0]
    np.testing.assert_array_equal(np.flatnonzero(cls_flat >= 0), [np.argmax(ious)])
    assert cls_flat[np.argmax(ious)] == 0 and num_positives.numpy() == 1
    best = anchors.boxes[np.argmax(ious)]
    ty, tx, th, tw = flat(box_targets, anchors)[np.argmax(ious)]
    anchor_h, anchor_w = best[2] - best[0], best[3] - best[1]
    np.testing.assert_allclose(ty, (21.0 - (best[0] + best[2]) / 2) / anchor_h, rtol=1e-5)
    np.testing.assert_allclose(tx, (21.5 - (best[1] + best[3]) / 2) / anchor_w, rtol=1e-5)
    np.testing.assert_allclose([th, tw], np.log([2.0 / anchor_h, 3.0 / anchor_w]), rtol=1e-5)


def test_no_boxes_means_all_background(labeler):
    no_boxes, no_classes = tf.zeros([0, 4]), tf.zeros([0], tf.int32)
    cls_targets, box_targets, num_positives = labeler.label(no_boxes, no_classes)
    assert num_positives.numpy() == 0
    assert all(np.all(t.numpy() == -1) for t in cls_targets.values())
    assert all(np.all(t.numpy() == 0) for t in box_targets.values())


def test_targets_have_the_shape_of_each_level(labeler):
    anchors = labeler.anchors
    box = tf.constant([[0.0, 0.0, 32.0, 32.0]])
    cls_targets, box_targets, _ = labeler.label(box, tf.constant([1]))
    for level in anchors.levels:
        height, width = anchors.level_sizes[level]
        assert cls_targets[level].shape == (height, width, anchors.num_anchors_per_location)
        assert cls_targets[level].dtype == tf.int32
        assert box_targets[level].shape == (height, width, 4 * anchors.num_anchors_per_location)


def test_matching_thresholds_and_force_match_like_the_official_matcher():
    # 3 boxes x 4 anchors. Anchor 0: best box 0 at 0.6 -> matched. Anchor 3: best box 0 at
    # exactly 0.5 -> matched. Anchor 2: best 0.3 -> background. Anchor 1: best 0.45 < 0.5, but it
    # is the best anchor of boxes 1 and 2, so it is forced to the lower index, box 1 (as the
    # official one-hot argmax does), even though box 2 overlaps it more.
    iou = tf.constant([
        [0.6, 0.1, 0.0, 0.5],
        [0.1, 0.4, 0.3, 0.0],
        [0.0, 0.45, 0.0, 0.3],
    ])
    np.testing.assert_array_equal(match_anchors(iou).numpy(), [0, 1, -1, 0])
    np.testing.assert_array_equal(match_anchors(tf.zeros([0, 4])).numpy(), [-1] * 4)
