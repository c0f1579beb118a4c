"""Exponential moving average of the trainable weights, used for evaluation and export.

As the official recipe (tfa MovingAverage with dynamic decay): the decay is
min(moving_average_decay, (1 + n) / (10 + n)) after n updates, so that the average follows the
weights closely early on instead of staying near the random initialization for thousands of
steps. Keras 3's optimizer EMA has no dynamic decay, hence this small layer. Shadows are keyed
by variable path, so a checkpoint's averages can be read back without knowing which variables
were trained.

It is a layer so that the model that owns it tracks its variables as non-trainable state: JAX's
stateless training step receives and returns them with the rest of the model's state. It is not
saved in `.keras` files (`save_own_variables`): those hold the weights, averaged or not.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
from keras import ops


class WeightAverage(keras.layers.Layer):
    """Shadow copies of `variables`, updated with `update()` after each optimizer step."""

    def __init__(self, variables, decay: float = 0.0, name: str = "ema"):
        super().__init__(name=name)
        self.decay = decay
        self._live = _Untracked(list(variables))
        self.num_updates = self.add_weight(
            shape=(), initializer="zeros", dtype="int", trainable=False, name="num_updates",
            aggregation="only_first_replica")
        self.shadows = {
            v.path: self.add_weight(
                shape=v.shape, initializer=_value_of(v), dtype=v.dtype, trainable=False,
                name="shadow", aggregation="only_first_replica")
            for v in self._live.value
        }
        self.built = True

    def _pairs(self):
        return [(self.shadows[v.path], v) for v in self._live.value]

    def current_decay(self):
        n = ops.cast(self.num_updates, "float32")
        return ops.minimum(ops.cast(self.decay, "float32"), (1.0 + n) / (10.0 + n))

    def update(self, applied=True) -> None:
        """One averaging step; none where `applied` (a bool tensor) is False, as for an optimizer
        step skipped by float16 loss scaling."""
        decay = ops.where(applied, self.current_decay(), 1.0)
        for shadow, variable in self._pairs():
            shadow_decay = ops.cast(decay, shadow.dtype)  # float64 shadows (a float64 policy)
            shadow.assign(shadow_decay * shadow
                          + (1.0 - shadow_decay) * ops.cast(variable, shadow.dtype))
        self.num_updates.assign(self.num_updates + ops.cast(applied, self.num_updates.dtype))

    def reset(self) -> None:
        """Restarts the average at the variables' current values."""
        for shadow, variable in self._pairs():
            shadow.assign(_copy(variable, shadow.dtype))
        self.num_updates.assign(0)

    def values_by_path(self) -> dict[str, np.ndarray]:
        """{variable path: averaged value}."""
        return {path: ops.convert_to_numpy(shadow) for path, shadow in self.shadows.items()}

    def copy_to_variables(self) -> None:
        for shadow, variable in self._pairs():
            variable.assign(_copy(shadow, variable.dtype))

    @contextlib.contextmanager
    def averaged_weights(self):
        """Runs the block with the averaged weights in the model, then restores the live ones."""
        variables = self._live.value
        live = [ops.convert_to_numpy(v) for v in variables]
        self.copy_to_variables()
        try:
            yield
        finally:
            for variable, value in zip(variables, live):
                variable.assign(value)

    def save_own_variables(self, store):
        """Nothing: a `.keras` file holds the model's weights; the average is training state,
        which `training.callbacks.TrainingCheckpoints` saves."""

    def load_own_variables(self, store):
        """Nothing, as `save_own_variables`."""


class _Untracked:
    """Holds references that the layer must not track: the live variables belong to the model."""

    def __init__(self, value):
        self.value = value


def _value_of(variable):
    """An initializer giving `variable`'s current value."""
    return lambda shape, dtype=None: _copy(variable, dtype)


def _copy(variable, dtype):
    """`variable`'s value in a buffer of its own: JAX's training step takes over (donates) the
    buffers of the model's variables, and a buffer held by two of them cannot be."""
    return ops.copy(ops.cast(variable, dtype))
