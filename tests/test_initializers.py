"""Initial weights drawn with NumPy (`model.initializers`) have Keras's distributions."""

import keras
import numpy as np
import pytest

from efficientdet_tf.model.initializers import HostRandomNormal, HostVarianceScaling

pytestmark = pytest.mark.any_backend

SHAPE = (3, 3, 64, 128)  # fan_in 576, fan_out 1152


@pytest.mark.parametrize("scale, mode, distribution", [
    (2.0, "fan_out", "untruncated_normal"),  # EfficientNet's convolutions
    (1.0, "fan_in", "truncated_normal"),  # the heads' separable convolutions
    (1.0, "fan_avg", "uniform"),  # Keras's default, glorot_uniform
])
def test_variance_scaling_draws_keras_distribution(scale, mode, distribution):
    ours = keras.ops.convert_to_numpy(HostVarianceScaling(scale, mode, distribution, seed=1)(SHAPE))
    keras_values = keras.ops.convert_to_numpy(
        keras.initializers.VarianceScaling(scale, mode, distribution, seed=1)(SHAPE))
    assert ours.shape == SHAPE and ours.dtype == np.float32
    assert ours.std() == pytest.approx(keras_values.std(), rel=0.02)
    if distribution != "untruncated_normal":  # bounded: the same bound
        assert np.abs(ours).max() == pytest.approx(np.abs(keras_values).max(), rel=0.02)


def test_truncated_normal_stays_within_two_standard_deviations_and_keeps_the_variance():
    values = keras.ops.convert_to_numpy(HostVarianceScaling(1.0, "fan_in", seed=2)(SHAPE))
    stddev = np.sqrt(1.0 / 576) / 0.87962566103423978
    assert np.abs(values).max() <= 2 * stddev
    assert values.std() == pytest.approx(np.sqrt(1.0 / 576), rel=0.02)


def test_a_seed_gives_the_same_values_and_random_normal_its_stddev():
    first, second = (keras.ops.convert_to_numpy(HostRandomNormal(stddev=0.01, seed=3)(SHAPE))
                     for _ in range(2))
    np.testing.assert_array_equal(first, second)
    assert first.std() == pytest.approx(0.01, rel=0.02)
