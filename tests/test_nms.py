"""NMS in keras.ops (`inference.nms`, every backend) against TensorFlow's fused kernels
(`backends.tensorflow_nms`, which exported models contain): the same detections."""

import numpy as np
import pytest
from backends import tensorflow_only

from efficientdet_tf.inference import nms

pytestmark = pytest.mark.any_backend

HARD = nms.NmsSettings(max_output_size=20, iou_threshold=0.5, score_threshold=float("-inf"),
                       soft_nms_sigma=0.0)
SOFT = nms.NmsSettings(max_output_size=20, iou_threshold=1.0, score_threshold=0.001,
                       soft_nms_sigma=0.5)


def crowded_boxes(rng, batch, count, num_classes):
    """Boxes in clusters (so that NMS has much to suppress), distinct scores, classes; some
    boxes with their corners swapped and some empty, as networks produce."""
    centers = rng.uniform(20, 80, (batch, 6, 2))[:, rng.integers(0, 6, count)]
    sizes = rng.uniform(5, 30, (batch, count, 2))
    jitter = rng.normal(0, 3, (batch, count, 2))
    boxes = np.concatenate([centers + jitter - sizes / 2, centers + jitter + sizes / 2], -1)
    boxes[:, ::17] = boxes[:, ::17][..., [2, 3, 0, 1]]  # corners swapped
    boxes[:, ::23, 2] = boxes[:, ::23, 0]  # empty
    scores = rng.permutation(count * batch).reshape(batch, count) / (count * batch) + 1e-3
    classes = rng.integers(0, num_classes, (batch, count))
    return boxes.astype(np.float32), scores.astype(np.float32), classes.astype(np.int32)


def as_numpy(selection):
    return [np.asarray(part) for part in selection]


def assert_same_selection(actual, expected, score_rtol=1e-6):
    actual, expected = as_numpy(actual), as_numpy(expected)
    np.testing.assert_array_equal(actual[3], expected[3])  # counts
    np.testing.assert_array_equal(actual[2], expected[2])  # classes
    np.testing.assert_allclose(actual[1], expected[1], rtol=score_rtol)
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-6)


@tensorflow_only
@pytest.mark.parametrize("settings", [HARD, SOFT], ids=["hard", "soft"])
@pytest.mark.parametrize("per_class", [False, True], ids=["global", "per_class"])
def test_greedy_nms_selects_what_the_tensorflow_kernel_selects(settings, per_class):
    from efficientdet_tf.backends import tensorflow_nms

    boxes, scores, classes = crowded_boxes(np.random.default_rng(0), 2, 300, 4)
    expected = nms.Selection(*tensorflow_nms.select_by_score(boxes, scores, classes, settings,
                                                             per_class, 4))
    actual = nms.select_by_score(boxes, scores, classes, settings, per_class, 4)
    assert 0 < np.asarray(expected.counts).min()
    assert_same_selection(actual, expected, score_rtol=1e-5)


@tensorflow_only
def test_pairs_of_every_class_select_what_combined_nms_selects():
    from efficientdet_tf.backends import tensorflow_nms

    boxes, scores, _ = crowded_boxes(np.random.default_rng(1), 2, 200, 1)
    pair_scores = np.random.default_rng(2).permutation(2 * 200 * 3).reshape(2, 200, 3) / 1200.0
    pair_scores = pair_scores.astype(np.float32)
    expected = tensorflow_nms.select_per_class_pairs(boxes, pair_scores, HARD)
    actual = nms.select_per_class_pairs(boxes, pair_scores, HARD)
    assert_same_selection(actual, expected)


def test_hard_nms_keeps_a_box_at_the_threshold_and_drops_one_above():
    # IoU with the first box: 0.5 exactly (kept: the kernel drops above the threshold), then 0.6.
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 6], [50, 50, 60, 60]]],
                     np.float32)
    scores = np.array([[0.9, 0.8, 0.7, 0.6]], np.float32)
    kept = nms.greedy_nms(boxes, scores, HARD)
    assert np.asarray(kept.counts).tolist() == [3]
    assert np.asarray(kept.indices)[0, :3].tolist() == [0, 1, 3]


def test_soft_nms_decays_by_the_gaussian_of_the_iou_and_picks_the_best_decayed_score():
    # Box 1 overlaps box 0 (IoU 0.5) and is decayed below box 2, which comes second.
    boxes = np.array([[[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60]]], np.float32)
    scores = np.array([[0.9, 0.8, 0.7]], np.float32)
    kept = nms.greedy_nms(boxes, scores, SOFT)
    decayed = 0.8 * np.exp(-0.25 / 0.5)
    assert np.asarray(kept.indices)[0, :3].tolist() == [0, 2, 1]
    np.testing.assert_allclose(np.asarray(kept.scores)[0, :3], [0.9, 0.7, decayed], rtol=1e-6)


def test_groups_only_suppress_within_their_group_and_ties_go_to_the_lower_index():
    boxes = np.array([[[0, 0, 10, 10]] * 3], np.float32)
    scores = np.array([[0.5, 0.5, 0.5]], np.float32)
    kept = nms.greedy_nms(boxes, scores, HARD, groups=np.array([[1, 0, 1]], np.int32))
    assert np.asarray(kept.counts).tolist() == [2]
    assert np.asarray(kept.indices)[0, :2].tolist() == [0, 1]
