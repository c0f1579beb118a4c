"""The networks' initial weights, drawn with NumPy on the host on every backend.

Keras draws initial values with the backend's random ops. On JAX each new variable shape then
compiles its own random-number kernel, about a second each on a small CPU: a minute to build
EfficientDet-D0, for values that a checkpoint usually replaces at once. These initializers give
the same distributions as Keras's (`VarianceScaling` and the Glorot, He and LeCun families it
covers, `RandomNormal`) from NumPy, seeded like Keras's (`keras.utils.set_random_seed` makes
them reproducible).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

# Keras's truncated normal draws within two standard deviations; this is the standard deviation
# of a unit normal truncated there, by which Keras divides to keep the intended variance.
_TRUNCATED_STDDEV = 0.87962566103423978


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class HostVarianceScaling(keras.initializers.VarianceScaling):
    """`keras.initializers.VarianceScaling`, drawn with NumPy."""

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        scale = self.scale / max(1.0, fan[self.mode])
        rng = _rng(self.seed)
        if self.distribution == "truncated_normal":
            values = _truncated_normal(rng, shape, math.sqrt(scale) / _TRUNCATED_STDDEV)
        elif self.distribution == "untruncated_normal":
            values = rng.normal(0.0, math.sqrt(scale), shape)
        else:
            limit = math.sqrt(3.0 * scale)
            values = rng.uniform(-limit, limit, shape)
        return ops.convert_to_tensor(values, dtype=dtype or keras.config.floatx())


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class HostRandomNormal(keras.initializers.RandomNormal):
    """`keras.initializers.RandomNormal`, drawn with NumPy."""

    def __call__(self, shape, dtype=None):
        values = _rng(self.seed).normal(self.mean, self.stddev, shape)
        return ops.convert_to_tensor(values, dtype=dtype or keras.config.floatx())


def glorot_uniform() -> HostVarianceScaling:
    """Keras's default kernel initializer (`glorot_uniform`)."""
    return HostVarianceScaling(1.0, mode="fan_avg", distribution="uniform")


def _fans(shape) -> tuple[float, float]:
    """Keras's fans: for a kernel [..., inputs, outputs], each times the receptive field."""
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive_field = math.prod(shape[:-2])
    return float(shape[-2] * receptive_field), float(shape[-1] * receptive_field)


def _rng(seed) -> np.random.Generator:
    if not isinstance(seed, int):
        raise ValueError(f"Host-drawn initializers take an integer seed, got {seed!r}.")
    return np.random.default_rng(seed)


def _truncated_normal(rng: np.random.Generator, shape, stddev: float) -> np.ndarray:
    """Normal values redrawn until all lie within two standard deviations (as Keras's)."""
    values = rng.normal(0.0, 1.0, shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.normal(0.0, 1.0, int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values * stddev
