"""The segmentation head and the model's heads: hparams, shapes, official names and counts."""

import numpy as np
import pytest
from small_models import shapes_only

from efficientdet_tf import build_model, get_config, load_weights, save_weights
from efficientdet_tf.anchors import Anchors
from efficientdet_tf.config import ConfigError
from efficientdet_tf.model.builder import model_outputs
from efficientdet_tf.model.checkpoint import checkpoint_name
from efficientdet_tf.model.layers import NormSettings
from efficientdet_tf.model.segmentation_head import SegmentationHead

# 64 = 2**max_level: the head doubles P6 back to 64 / 8 * 2 = 16 pixels.
TINY = "image_size=64,max_level=6,fpn_cell_repeats=1,box_class_repeats=1"


def tiny_config(overrides):
    return get_config("efficientdet-d0", f"{TINY},{overrides}")


@pytest.mark.parametrize("overrides, message", [
    ("heads=[]", "name each head once"),
    ("heads=object_detection*object_detection", "name each head once"),
    ("heads=mask", "expected a list of one of 'object_detection', 'segmentation'"),
    ("heads=segmentation,seg_num_classes=1", "'seg_num_classes' = 1 must be at least 2"),
    ("heads=segmentation,image_size=96", "must be a multiple of 2\\*\\*max_level = 64"),
])
def test_bad_heads_hparams_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(overrides)


def test_heads_default_to_detection_and_take_one_name():
    assert get_config("efficientdet-d0").heads == ["object_detection"]
    assert tiny_config("heads=segmentation").heads == ["segmentation"]


def test_segmentation_only_model_returns_logits_at_twice_the_lowest_level():
    config = tiny_config("heads=segmentation,seg_num_classes=5")
    outputs = build_model(config)(np.zeros((2, 64, 64, 3), np.float32))
    assert set(outputs) == {"segmentation_logits"}
    read = model_outputs(config, outputs)
    assert read.class_outputs is None and read.box_outputs is None
    assert tuple(read.segmentation_logits.shape) == (2, 16, 16, 5)


def test_two_head_model_returns_both_and_detection_only_keeps_its_pair():
    both = tiny_config("heads=object_detection*segmentation,min_level=2,num_classes=3")
    read = model_outputs(both, build_model(both)(np.zeros((1, 64, 64, 3), np.float32)))
    assert tuple(read.segmentation_logits.shape) == (1, 32, 32, 3)  # P2 (16 px) doubled
    assert [tuple(c.shape) for c in read.class_outputs] == [
        (1, 16, 16, 27), (1, 8, 8, 27), (1, 4, 4, 27), (1, 2, 2, 27), (1, 1, 1, 27)]
    assert len(read.box_outputs) == 5
    predictions = sum(int(np.prod(c.shape)) // both.num_classes for c in read.class_outputs)
    assert len(Anchors.from_config(both)) == predictions  # anchors cover P2 too
    detection = tiny_config("num_classes=3")
    outputs = build_model(detection)(np.zeros((1, 64, 64, 3), np.float32))
    assert isinstance(outputs, (tuple, list)) and len(outputs) == 2
    assert model_outputs(detection, outputs).segmentation_logits is None


def test_head_variables_have_the_official_names():
    model = build_model(tiny_config("heads=segmentation"))
    names = sorted(checkpoint_name(v) for v in model.weights if "segmentation_head" in v.path)
    expected = sorted(
        [f"segmentation_head/conv2d_transpose{suffix}/kernel" for suffix in ("", "_1", "_2", "_3")]
        + ["segmentation_head/conv2d_transpose_3/bias"]
        + [f"segmentation_head/bn_{i}/{v}" for i in range(3)
           for v in ("gamma", "beta", "moving_mean", "moving_variance")]
    )
    assert names == expected


def test_weights_round_trip_through_the_official_layout(tmp_path):
    config = tiny_config("heads=object_detection*segmentation,num_classes=3")
    source, target = build_model(config), build_model(config)
    rng = np.random.default_rng(0)
    for variable in source.weights:
        variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    load_weights(target, save_weights(source, tmp_path / "model"), use_ema=False)
    images = rng.normal(size=(1, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(
        target(images)["segmentation_logits"], source(images)["segmentation_logits"], rtol=1e-5)
    for mine, theirs in zip(source.weights, target.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_d0_segmentation_has_the_official_parameter_counts():
    """At 128 px (2**max_level; the counts do not depend on the size), shapes only."""
    config = get_config("efficientdet-d0", "heads=segmentation,seg_num_classes=3,image_size=128")
    with shapes_only():
        model = build_model(config)
        counts = tuple(sum(int(np.prod(v.shape)) for v in weights)
                       for weights in (model.weights, model.trainable_weights))
    assert counts == (4_097_496, 4_053_688)


def test_head_config_round_trips():
    head = SegmentationHead(4, filters=8, num_levels=3, act_type="relu",
                            norm=NormSettings(momentum=0.9), name="segmentation_head")
    copy = SegmentationHead.from_config(head.get_config())
    assert copy.get_config() == head.get_config()
    assert copy.norm_settings == NormSettings(momentum=0.9) and copy.act_type == "relu"
