"""Post-processing: raw per-level outputs -> detections, in the three official NMS modes."""

import logging
import math

import numpy as np
import pytest
import tensorflow as tf
from backends import tensorflow_only
from detection_matching import match_detections
from official_fixture import (
    FIXTURE_MODEL,
    expected_detections,
    expected_outputs,
    raw_outputs,
    requires_fixture,
)

from efficientdet_tf.anchors import Anchors, encode_boxes
from efficientdet_tf.config import get_config
from efficientdet_tf.inference.postprocess import (
    POSTPROCESS_MODES,
    NmsParameters,
    Postprocessor,
    _warn_once,
)

pytestmark = pytest.mark.any_backend

BACKGROUND_LOGIT = -10.0  # sigmoid ~ 4.5e-5, under the score thresholds used below


@requires_fixture
@pytest.mark.parametrize("mode", [
    "global",
    "per_class",
    # The official `combined` kernel takes equal scores in the order of its heap, which no other
    # backend reproduces; the fixture's padding has many (tests/test_nms.py compares the
    # kernels on scores without ties).
    pytest.param("combined", marks=tensorflow_only),
])
def test_fixture_detections_match_the_official_ones(mode):
    class_outputs, box_outputs = raw_outputs()
    detections = Postprocessor(get_config(FIXTURE_MODEL), mode)(
        class_outputs, box_outputs, expected_outputs()["image_scale"]
    )
    assert np.asarray(detections.num_detections).tolist() == [100]
    actual = (
        np.asarray(detections.boxes[0]),
        np.asarray(detections.scores[0]),
        np.asarray(detections.classes[0]),
    )
    match = match_detections(expected_detections(mode), actual, score_tolerance=1e-4, min_iou=0.99)
    assert match.num_matched >= 95, (
        f"{mode}: {match.num_matched}/100 matched, max score difference "
        f"{match.max_score_difference:.2e}, min IoU {match.min_iou:.5f}"
    )


# --- synthetic outputs on a small config ----------------------------------------------------------


def small_config(**nms_configs):
    overrides = {"image_size": 64, "num_classes": 3, "nms_configs.score_thresh": 0.01}
    overrides.update({f"nms_configs.{key}": value for key, value in nms_configs.items()})
    return get_config("efficientdet-d0", overrides)


def anchor_index(anchors, level, y, x, anchor):
    """Index in anchor order of `anchor` (octave-major) at row y, column x of `level`."""
    previous = sum(
        anchors.num_anchors_per_level[lower] for lower in range(anchors.min_level, level)
    )
    width = anchors.level_sizes[level][1]
    return previous + (y * width + x) * anchors.num_anchors_per_location + anchor


def split_levels(merged, anchors):
    """[batch, num_anchors, values] in anchor order -> per level [batch, H, W, anchors * values]."""
    outputs, start = [], 0
    for level in anchors.levels:
        count = anchors.num_anchors_per_level[level]
        outputs.append(
            merged[:, start : start + count].reshape(len(merged), *anchors.level_sizes[level], -1)
        )
        start += count
    return outputs


def network_outputs(config, objects):
    """Raw outputs of one image: background everywhere but `objects`.

    objects: (anchor index, 0-based class, logit, yxyx box or None for the anchor's own box).
    """
    anchors = Anchors.from_config(config)
    logits = np.full((1, len(anchors), config.num_classes), BACKGROUND_LOGIT, np.float32)
    regressions = np.zeros((1, len(anchors), 4), np.float32)
    for index, class_id, logit, box in objects:
        logits[0, index, class_id] = logit
        if box is not None:
            regressions[0, index] = encode_boxes([box], anchors.boxes[index : index + 1]).numpy()[0]
    return split_levels(logits, anchors), split_levels(regressions, anchors)


def sigmoid(logit):
    return 1 / (1 + math.exp(-logit))


@pytest.mark.parametrize("mode", POSTPROCESS_MODES)
def test_one_object_gives_one_detection_in_original_pixels(mode):
    config = small_config()
    anchors = Anchors.from_config(config)
    index = anchor_index(anchors, level=3, y=3, x=3, anchor=0)  # box [12, 12, 44, 44]
    detections = Postprocessor(config, mode)(
        *network_outputs(config, [(index, 1, 2.0, None)]), [2.0]
    )

    assert np.asarray(detections.num_detections).tolist() == [1]
    np.testing.assert_allclose(np.asarray(detections.boxes[0, 0]), [24, 24, 88, 88], rtol=1e-6)
    assert np.asarray(detections.scores[0, 0]) == pytest.approx(sigmoid(2.0))
    assert np.asarray(detections.classes[0, 0]) == 2.0
    for padding in (detections.boxes[0, 1:], detections.scores[0, 1:], detections.classes[0, 1:]):
        np.testing.assert_array_equal(np.asarray(padding), 0.0)


def overlapping_pair(config, second_class):
    """Two objects with the same box: class 0 (logit 2) and `second_class` (logit 1)."""
    anchors = Anchors.from_config(config)
    first = anchor_index(anchors, level=3, y=3, x=3, anchor=0)
    second = anchor_index(anchors, level=3, y=3, x=3, anchor=1)
    box = anchors.boxes[first]
    return network_outputs(config, [(first, 0, 2.0, None), (second, second_class, 1.0, box)])


@pytest.mark.parametrize("sigma", [None, 0.3])
def test_soft_nms_decays_an_overlapping_box_by_gaussian_of_its_iou(sigma):
    config = small_config(sigma=sigma)
    detections = Postprocessor(config, "global")(*overlapping_pair(config, second_class=0))
    paper_sigma = 0.5 if sigma is None else sigma  # IoU 1: decay exp(-1 / sigma)
    assert np.asarray(detections.num_detections).tolist() == [2]
    np.testing.assert_allclose(
        np.asarray(detections.scores[0, :2]),
        [sigmoid(2.0), sigmoid(1.0) * math.exp(-1 / paper_sigma)],
        rtol=1e-4,
    )


def test_hard_nms_removes_an_overlapping_box():
    config = small_config(method="hard")
    detections = Postprocessor(config, "global")(*overlapping_pair(config, second_class=0))
    assert np.asarray(detections.num_detections).tolist() == [1]
    assert np.asarray(detections.scores[0, 0]) == pytest.approx(sigmoid(2.0))


@pytest.mark.parametrize("mode", ["per_class", "combined"])
def test_class_aware_modes_keep_overlapping_boxes_of_different_classes(mode):
    config = small_config()
    detections = Postprocessor(config, mode)(*overlapping_pair(config, second_class=2))
    assert np.asarray(detections.num_detections).tolist() == [2]
    np.testing.assert_allclose(
        np.asarray(detections.scores[0, :2]), [sigmoid(2.0), sigmoid(1.0)], rtol=1e-5
    )
    np.testing.assert_array_equal(np.asarray(detections.classes[0, :2]), [1.0, 3.0])


@pytest.mark.parametrize(
    "mode, clipped", [("global", True), ("combined", True), ("per_class", False)]
)
def test_boxes_are_clipped_to_the_network_input_except_per_class_like_official(mode, clipped):
    config = small_config()
    anchors = Anchors.from_config(config)
    index = anchor_index(anchors, level=6, y=0, x=0, anchor=0)
    np.testing.assert_array_equal(anchors.boxes[index], [-96, -96, 160, 160])
    detections = Postprocessor(config, mode)(*network_outputs(config, [(index, 0, 2.0, None)]))
    expected = [0, 0, 64, 64] if clipped else [-96, -96, 160, 160]
    np.testing.assert_allclose(np.asarray(detections.boxes[0, 0]), expected)



def two_overlapping_pairs(config):
    """Two same-class pairs far apart, each a box (logit 2) and a weaker one (logit 1) at IoU
    0.43 (kept by hard NMS at IoU threshold 0.5, removed at 0.3) and 0.67 (removed at 0.5, kept
    at 0.7)."""
    anchors = Anchors.from_config(config)
    indices = [anchor_index(anchors, 3, 0, 0, anchor) for anchor in range(4)]
    boxes = [[0, 0, 20, 20], [0, 8, 20, 28], [40, 40, 60, 60], [40, 44, 60, 64]]
    logits = [2.0, 1.0, 2.0, 1.0]
    return network_outputs(config, [
        (index, 0, logit, np.array(box, np.float32))
        for index, logit, box in zip(indices, logits, boxes)
    ])


@pytest.mark.parametrize("iou_thresh", [0.3, 0.7])
def test_combined_always_uses_iou_0_5_like_official(iou_thresh, caplog):
    """The official combined mode leaves combined_non_max_suppression at its default IoU, 0.5,
    whatever nms_configs.iou_thresh says, and says so once."""
    outputs = two_overlapping_pairs(small_config())
    _warn_once.cache_clear()
    expected = Postprocessor(small_config(method="hard"), "combined")(*outputs)
    with caplog.at_level(logging.WARNING, logger="efficientdet_tf.inference.postprocess"):
        found = [Postprocessor(small_config(method="hard", iou_thresh=iou_thresh), "combined")(
            *outputs) for _ in range(2)]
    assert np.asarray(expected.num_detections).tolist() == [3]
    np.testing.assert_allclose(np.asarray(expected.scores[0, :3]),
                               [sigmoid(2.0), sigmoid(2.0), sigmoid(1.0)], rtol=1e-6)
    for detections in found:
        for part, expected_part in zip(detections, expected):
            np.testing.assert_array_equal(np.asarray(part), np.asarray(expected_part))
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and f"iou_thresh = {iou_thresh} is not used" in warnings[0]


@pytest.mark.parametrize("mode", ["global", "per_class"])
def test_global_and_per_class_apply_iou_thresh(mode):
    outputs = two_overlapping_pairs(small_config())
    counts = [np.asarray(Postprocessor(small_config(method="hard", iou_thresh=iou), mode)(
        *outputs).num_detections).tolist() for iou in (0.3, None, 0.7)]
    assert counts == [[2], [3], [4]]


@pytest.mark.parametrize("method, key, default", [
    ("hard", "iou_thresh", 0.5),
    ("hard", "score_thresh", float("-inf")),
    ("gaussian", "score_thresh", 0.001),
    ("gaussian", "sigma", 0.5),
])
def test_a_zero_nms_setting_stands_for_its_default_like_official(method, key, default):
    """The official code reads these with `value or default`: 0 is the default, as null is."""
    parameters = {
        value: NmsParameters.from_config(small_config(**{key: value}).nms_configs, method)
        for value in (0.0, None)
    }
    assert parameters[0.0] == parameters[None]
    field = {"iou_thresh": "iou_threshold", "score_thresh": "score_threshold",
             "sigma": "soft_nms_sigma"}[key]
    assert getattr(parameters[0.0], field) == default


def test_soft_nms_with_score_thresh_0_drops_scores_under_0_001_like_official():
    config = small_config(score_thresh=0.0)
    detections = Postprocessor(config, "global")(*overlapping_pair(config, second_class=0))
    # Background scores (4.5e-5) are under the official default 0.001; sigmoid(1) * exp(-2) not.
    assert np.asarray(detections.num_detections).tolist() == [2]


def test_pre_nms_top_k_keeps_the_best_pairs():
    config = small_config(max_nms_inputs=2)
    anchors = Anchors.from_config(config)
    corners = [
        (0, 0),
        (0, 4),
        (4, 0),
        (4, 4),
    ]  # 32 pixels apart: the 32 x 32 anchors do not overlap
    objects = [
        (anchor_index(anchors, 3, y, x, 0), rank % 3, 1.0 + rank, None)
        for rank, (y, x) in enumerate(corners)
    ]
    detections = Postprocessor(config, "global")(*network_outputs(config, objects))
    assert np.asarray(detections.num_detections).tolist() == [2]
    np.testing.assert_allclose(
        np.asarray(detections.scores[0, :2]), [sigmoid(4.0), sigmoid(3.0)], rtol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(detections.classes[0, :2]), [1.0, 3.0])


def test_max_nms_inputs_keeps_the_best_anchor_class_pairs_even_of_one_anchor():
    """The K best pairs over all anchors x classes, several classes of an anchor among them."""
    k = 40
    config = small_config(max_nms_inputs=k, method="hard", iou_thresh=1.0, score_thresh=None,
                          max_output_size=k)
    anchors = Anchors.from_config(config)
    rng = np.random.default_rng(0)
    logits = rng.normal(-3.0, 1.0, (1, len(anchors), config.num_classes)).astype(np.float32)
    logits[0, rng.choice(len(anchors), 10, replace=False)] += 6.0  # 10 anchors x 3 classes lead
    regressions = np.zeros((1, len(anchors), 4), np.float32)
    detections = Postprocessor(config, "global")(
        split_levels(logits, anchors), split_levels(regressions, anchors)
    )

    best = np.argsort(-logits.reshape(-1))[:k]
    assert np.asarray(detections.num_detections).tolist() == [k]
    np.testing.assert_allclose(
        np.asarray(detections.scores[0]), 1 / (1 + np.exp(-logits.reshape(-1)[best])), rtol=1e-6
    )
    np.testing.assert_array_equal(np.asarray(detections.classes[0]), best % config.num_classes + 1)
    clipped_anchors = np.clip(anchors.boxes[best // config.num_classes], 0, 64)  # global clips
    np.testing.assert_allclose(np.asarray(detections.boxes[0]), clipped_anchors, atol=1e-4)


@tensorflow_only
@pytest.mark.parametrize("mode", POSTPROCESS_MODES)
def test_runs_in_a_graph_with_a_dynamic_batch(mode):
    config = small_config()
    anchors = Anchors.from_config(config)
    images = [
        network_outputs(config, [(anchor_index(anchors, 3, 3, 3, 0), 1, 2.0, None)]),
        network_outputs(config, [(anchor_index(anchors, 4, 1, 2, 4), 0, 1.0, None)] * 2),
    ]
    batch = [
        [np.concatenate(levels) for levels in zip(*(image[part] for image in images))]
        for part in (0, 1)
    ]
    postprocessor = Postprocessor(config, mode)
    signature = [
        [tf.TensorSpec([None, *output.shape[1:]], tf.float32) for output in part] for part in batch
    ]
    graph_postprocess = tf.function(
        lambda class_outputs, box_outputs, scales: postprocessor(
            class_outputs, box_outputs, scales
        ),
        input_signature=[*signature, tf.TensorSpec([None], tf.float32)],
    )
    batched = graph_postprocess(*batch, tf.constant([1.0, 3.0]))
    for image, (outputs, scale) in enumerate(zip(images, [1.0, 3.0])):
        single = postprocessor(*outputs, [scale])
        for batched_part, single_part in zip(batched, single):
            np.testing.assert_allclose(
                np.asarray(batched_part[image]), np.asarray(single_part[0]), rtol=1e-6
            )
    assert np.asarray(batched.num_detections).tolist() == [1, 1]


def test_rejects_wrong_levels_channels_and_settings():
    config = small_config()
    class_outputs, box_outputs = network_outputs(config, [])
    postprocessor = Postprocessor(config)
    with pytest.raises(ValueError, match="list of 5 tensors, one per level 3..7"):
        postprocessor(class_outputs[:4], box_outputs)
    with pytest.raises(ValueError, match=r"box_outputs of level 3 .* 36\] \(9 anchors x 4\)"):
        postprocessor(class_outputs, [box_outputs[0][..., :8]] + box_outputs[1:])
    with pytest.raises(ValueError, match="mode"):
        Postprocessor(config, "fast")
    with pytest.raises(ValueError, match="max_nms_inputs"):
        Postprocessor(small_config(max_nms_inputs=774 * 3 + 1))
