"""The weights' moving average with the official dynamic decay."""

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.model.weight_average import WeightAverage


def make(decay=0.9998, dtype=tf.float32):
    variable = tf.Variable([1.0, 2.0], dtype=dtype)
    variable.path = "layer/kernel"  # paths key the shadows, as for Keras variables
    return variable, WeightAverage([variable], decay)


def test_dynamic_decay_follows_early_updates_closely():
    variable, average = make()
    assert float(average.current_decay()) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    variable.assign([11.0, 12.0])
    average.update()
    np.testing.assert_allclose(average.values_by_path()["layer/kernel"], [10.0, 11.0])
    average.num_updates.assign(90)
    assert float(average.current_decay()) == pytest.approx(0.91)  # (1 + 90) / (10 + 90)
    average.num_updates.assign(100_000)
    assert float(average.current_decay()) == pytest.approx(0.9998)


def test_float64_weights_are_averaged():
    """A float64 network (tests/training_update.py's reference step) has float64 shadows; the
    decay stays float32, as the official one."""
    variable, average = make(dtype=tf.float64)
    variable.assign([11.0, 12.0])
    average.update()
    shadow = average.values_by_path()["layer/kernel"]
    assert shadow.dtype == np.float64
    np.testing.assert_allclose(shadow, [10.0, 11.0], rtol=1e-7)


def test_a_step_the_optimizer_skipped_leaves_the_average():
    variable, average = make()
    variable.assign([11.0, 12.0])
    average.update(applied=tf.constant(False))
    np.testing.assert_array_equal(average.values_by_path()["layer/kernel"], [1.0, 2.0])
    assert int(average.num_updates) == 0
    average.update(applied=tf.constant(True))
    np.testing.assert_allclose(average.values_by_path()["layer/kernel"], [10.0, 11.0])
    assert int(average.num_updates) == 1


def test_averaged_weights_are_swapped_in_and_out():
    variable, average = make()
    variable.assign([5.0, 5.0])
    with average.averaged_weights():
        np.testing.assert_array_equal(variable.numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(variable.numpy(), [5.0, 5.0])
    average.reset()
    np.testing.assert_array_equal(average.values_by_path()["layer/kernel"], [5.0, 5.0])
    assert int(average.num_updates) == 0
