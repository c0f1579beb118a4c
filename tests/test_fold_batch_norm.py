"""Inference-time batch-norm folding: same outputs, no variable of the model touched."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.inference.fold_batch_norm import FoldedFunction
from efficientdet_tf.model.builder import build_model

# One BiFPN cell and one head repeat (every kind of convolution and batch norm is there) at 64 px:
# tracing and folding cost by the number of layers.
TINY = {"image_size": 64, "num_classes": 3, "fpn_cell_repeats": 1, "box_class_repeats": 1}


def randomize_batch_norms(model, seed=0):
    """Statistics and affine parameters away from their initial 0 / 1, so that folding matters
    (kept near them: a deep net of large random scales would amplify float rounding)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        name = weight.path.rsplit("/", 1)[-1]
        shape = tuple(weight.shape)
        if name in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.7, 1.4, shape).astype(np.float32))
        elif name in ("beta", "moving_mean"):
            weight.assign(rng.normal(0.0, 0.2, shape).astype(np.float32))


def network_function(model, config):
    spec = tf.TensorSpec([None, *config.image_size, 3], tf.float32)
    return tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)


@pytest.mark.parametrize("overrides", [{}, {"separable_conv": False, "conv_bn_act_pattern": True}])
def test_folded_network_gives_the_same_outputs(overrides):
    config = get_config("efficientdet-d0", {**TINY, **overrides})
    keras.utils.set_random_seed(0)
    model = build_model(config)
    randomize_batch_norms(model)
    before = [weight.numpy().copy() for weight in model.weights]

    folded = FoldedFunction(network_function(model, config))

    images = tf.random.stateless_normal([2, *config.image_size, 3], seed=[1, 2])
    expected = tf.nest.flatten(model(images, training=False))
    actual = tf.nest.flatten(folded(images))
    assert len(actual) == len(expected) == 10  # class and box outputs of levels 3..7
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-4)
    batch_norms = [w for w in model.weights if w.path.endswith("/moving_variance")]
    assert folded.num_folded == len(batch_norms)
    for want, weight in zip(before, model.weights):
        np.testing.assert_array_equal(weight.numpy(), want)


def test_a_batch_norm_that_follows_no_convolution_stays():
    inputs = keras.Input((8, 8, 4))
    pooled = keras.layers.AveragePooling2D(2)(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization()(pooled))
    randomize_batch_norms(model)
    spec = tf.TensorSpec([1, 8, 8, 4], tf.float32)
    folded = FoldedFunction(tf.function(lambda x: model(x)).get_concrete_function(spec))
    images = tf.random.stateless_normal([1, 8, 8, 4], seed=[3, 4])
    assert folded.num_folded == 0
    np.testing.assert_allclose(folded(images).numpy(), model(images).numpy(), atol=1e-6)
