"""EfficientNet backbone: compound scaling, features, and the standalone classifier."""

import numpy as np
import pytest
from small_models import shapes_only

from efficientdet_tf.model.efficientnet import (
    EfficientNet,
    build_classifier,
    expand_blocks,
    get_spec,
    round_filters,
    round_repeats,
    scaled_stages,
)
from efficientdet_tf.model.summary import count_params

# Trainable parameters of the official classifiers (1000 classes).
CLASSIFIER_PARAMS = {
    "efficientnet-b0": 5_288_548,
    "efficientnet-b1": 7_794_184,
    "efficientnet-b2": 9_109_994,
    "efficientnet-b3": 12_233_232,
    "efficientnet-b4": 19_341_616,
    "efficientnet-b5": 30_389_784,
    "efficientnet-b6": 43_040_704,
    "efficientnet-b7": 66_347_960,
}


@pytest.mark.parametrize("name, params", CLASSIFIER_PARAMS.items())
def test_classifier_trainable_parameters_are_official(name, params):
    """Built at 64 px (parameters do not depend on the size), shapes only."""
    with shapes_only():
        model = build_classifier(name, image_size=64)
        assert count_params(model.trainable_weights) == params


def test_rounding_rules():
    assert round_filters(32, 1.1) == 32  # 35.2 -> 32 (within 10%)
    assert round_filters(16, 1.4) == 24  # 22.4 -> 24
    assert round_filters(40, 1.8) == 72
    assert round_repeats(3, 3.1) == 10


def test_lite_keeps_stem_head_and_outer_stage_depths_and_drops_se():
    lite4 = scaled_stages(get_spec("efficientnet-lite4"))
    b4 = scaled_stages(get_spec("efficientnet-b4"))
    assert [s.num_repeat for s in lite4][0] == 1 and lite4[-1].num_repeat == 1
    assert b4[-1].num_repeat == 2
    assert all(stage.se_ratio is None for stage in lite4)
    assert len(expand_blocks(b4)) == 32


def test_features_are_at_strides_2_to_32_with_stage_widths():
    backbone = EfficientNet("efficientnet-b0")
    features = backbone(np.zeros((2, 64, 96, 3), np.float32))
    assert [tuple(f.shape) for f in features] == [
        (2, 32, 48, 16), (2, 16, 24, 24), (2, 8, 12, 40), (2, 4, 6, 112), (2, 2, 3, 320)
    ]


def test_official_variable_names():
    backbone = EfficientNet("efficientnet-b0")
    backbone(np.zeros((1, 32, 32, 3), np.float32))
    paths = {v.path for v in backbone.weights}
    assert {
        "efficientnet-b0/stem/conv2d/kernel",
        "efficientnet-b0/blocks_0/se/conv2d_1/bias",
        "efficientnet-b0/blocks_1/conv2d_1/kernel",
        "efficientnet-b0/blocks_1/tpu_batch_normalization_2/moving_variance",
    } <= paths


def test_stochastic_depth_only_while_training():
    backbone = EfficientNet("efficientnet-b0", survival_prob=0.5)
    images = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
    inference = [backbone(images, training=False)[-1] for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    training = [backbone(images, training=True)[-1] for _ in range(2)]
    assert not np.allclose(training[0], training[1])
