"""Anchor generation and the box coder."""

import math

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.anchors import Anchors, decode_boxes, encode_boxes, feature_sizes
from efficientdet_tf.config import get_config


def test_feature_sizes_halve_rounding_up():
    assert feature_sizes(512, 7) == [
        (512, 512),
        (256, 256),
        (128, 128),
        (64, 64),
        (32, 32),
        (16, 16),
        (8, 8),
        (4, 4),
    ]
    assert feature_sizes((100, 75), 5) == [(100, 75), (50, 38), (25, 19), (13, 10), (7, 5), (4, 3)]


def _hand_computed_anchors(level_sizes, image_size, num_scales, aspect_ratios, anchor_scale):
    """The anchor recipe written out loop by loop: level, y, x, octave, aspect ratio."""
    image_height, image_width = image_size
    boxes = []
    for height, width in level_sizes:
        stride_y, stride_x = image_height / height, image_width / width
        for y in range(height):
            for x in range(width):
                center_y, center_x = (y + 0.5) * stride_y, (x + 0.5) * stride_x
                for octave in range(num_scales):
                    for ratio in aspect_ratios:
                        scale = anchor_scale * 2 ** (octave / num_scales)
                        half_h = scale * stride_y / math.sqrt(ratio) / 2
                        half_w = scale * stride_x * math.sqrt(ratio) / 2
                        boxes.append(
                            [
                                center_y - half_h,
                                center_x - half_w,
                                center_y + half_h,
                                center_x + half_w,
                            ]
                        )
    return np.array(boxes)


def test_anchor_count_and_order_of_a_small_config():
    anchors = Anchors(
        min_level=3,
        max_level=4,
        num_scales=2,
        aspect_ratios=[1.0, 4.0],
        anchor_scale=2.0,
        image_size=(32, 16),
    )
    assert anchors.num_anchors_per_location == 4
    assert anchors.level_sizes == {3: (4, 2), 4: (2, 1)}
    assert anchors.num_anchors_per_level == {3: 32, 4: 8}
    assert anchors.boxes.shape == (40, 4) and anchors.boxes.dtype == np.float32
    np.testing.assert_allclose(
        anchors.boxes,
        _hand_computed_anchors([(4, 2), (2, 1)], (32, 16), 2, [1.0, 4.0], 2.0),
        atol=1e-5,
    )
    # Level 3, row 1, column 0, octave 1, aspect ratio 4: centre (12, 4), base size 16 * sqrt(2),
    # twice as wide and half as high.
    base = 16 * math.sqrt(2)
    np.testing.assert_allclose(
        anchors.boxes[(1 * 2 + 0) * 4 + 1 * 2 + 1],
        [12 - base / 4, 4 - base, 12 + base / 4, 4 + base],
        rtol=1e-6,
    )
    # First anchor of level 4: centre (8, 8), size 2 * 16.
    np.testing.assert_allclose(anchors.boxes[32], [-8, -8, 24, 24])


def test_anchors_from_config():
    config = get_config("efficientdet-d0")
    anchors = Anchors.from_config(config)
    assert len(anchors) == (64 * 64 + 32 * 32 + 16 * 16 + 8 * 8 + 4 * 4) * 9 == 49104
    np.testing.assert_array_equal(anchors.boxes[0], [-12, -12, 20, 20])
    np.testing.assert_array_equal(Anchors(3, 7, 3, [1.0, 2.0, 0.5], 4.0, 512).boxes, anchors.boxes)


def test_anchors_reject_bad_levels():
    with pytest.raises(ValueError, match="min_level <= max_level"):
        Anchors(5, 3, 3, [1.0], 4.0, 512)


def test_encode_known_values():
    anchor = [0.0, 0.0, 10.0, 20.0]  # centre (5, 10), size 10 x 20
    box = [0.0, 1.0, 20.0, 11.0]  # centre (10, 6), size 20 x 10
    np.testing.assert_allclose(
        encode_boxes(np.array([box]), np.array([anchor])).numpy(),
        [[0.5, -0.2, math.log(2.0), math.log(0.5)]],
        rtol=1e-6,
    )


def test_box_equal_to_its_anchor_encodes_to_zero():
    anchors = Anchors.from_config(get_config("efficientdet-d0")).boxes[:500]
    np.testing.assert_allclose(encode_boxes(anchors, anchors).numpy(), 0.0, atol=1e-6)


def test_encode_decode_round_trip_for_tensors_and_numpy():
    rng = np.random.default_rng(0)
    anchors = Anchors.from_config(get_config("efficientdet-d0")).boxes[::97]
    top_left = rng.uniform(-50, 500, size=(len(anchors), 2))
    boxes = np.concatenate([top_left, top_left + rng.uniform(1, 300, size=top_left.shape)], axis=1)
    boxes = boxes.astype(np.float32)

    encoded = encode_boxes(tf.constant(boxes), tf.constant(anchors))
    assert encoded.shape == boxes.shape
    np.testing.assert_allclose(decode_boxes(encoded, anchors).numpy(), boxes, atol=1e-3)
    np.testing.assert_allclose(
        decode_boxes(encode_boxes(boxes, anchors).numpy(), anchors).numpy(), boxes, atol=1e-3
    )


def test_decode_broadcasts_anchors_over_a_batch():
    anchors = Anchors.from_config(get_config("efficientdet-d0")).boxes[:10]
    encoded = np.zeros((2, 10, 4), np.float32)
    np.testing.assert_allclose(
        decode_boxes(encoded, anchors).numpy(), np.stack([anchors] * 2), atol=1e-5
    )
