"""Exponential moving average of the trainable weights, used for evaluation and export.

As the official recipe (tfa MovingAverage with dynamic decay): the decay is
min(moving_average_decay, (1 + n) / (10 + n)) after n updates, so that the average follows the
weights closely early on instead of staying near the random initialization for thousands of
steps. Keras 3's optimizer EMA has no dynamic decay, hence this small module. Shadows are keyed
by variable path, so a checkpoint's averages can be read back without knowing which variables
were trained.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


class _Untracked:
    """Holds references that checkpoints must not follow: the live variables belong to the
    model and are saved with it, not as part of the average."""

    def __init__(self, value):
        self.value = value


class WeightAverage(tf.Module):
    """Shadow copies of `variables`, updated with `update()` after each optimizer step."""

    def __init__(self, variables, decay: float = 0.0, name: str = "ema"):
        super().__init__(name=name)
        self.decay = decay
        self._live = _Untracked(list(variables))
        self.num_updates = tf.Variable(
            0, dtype=tf.int64, trainable=False, name="num_updates",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.shadows = {
            v.path: tf.Variable(
                tf.convert_to_tensor(v), trainable=False, name="shadow",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            for v in self._live.value
        }

    def _pairs(self):
        return [(self.shadows[v.path], v) for v in self._live.value]

    def current_decay(self) -> tf.Tensor:
        n = tf.cast(self.num_updates, tf.float32)
        return tf.minimum(tf.cast(self.decay, tf.float32), (1.0 + n) / (10.0 + n))

    def update(self, applied=True) -> None:
        """One averaging step; none where `applied` (a bool tensor) is False, as for an optimizer
        step skipped by float16 loss scaling."""
        decay = tf.where(applied, self.current_decay(), 1.0)
        for shadow, variable in self._pairs():
            shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(variable, shadow.dtype))
        self.num_updates.assign_add(tf.cast(applied, tf.int64))

    def reset(self) -> None:
        """Restarts the average at the variables' current values."""
        for shadow, variable in self._pairs():
            shadow.assign(tf.cast(variable, shadow.dtype))
        self.num_updates.assign(0)

    def values_by_path(self) -> dict[str, tf.Tensor]:
        """{variable path: averaged value}."""
        return {path: shadow.read_value() for path, shadow in self.shadows.items()}

    def copy_to_variables(self) -> None:
        for shadow, variable in self._pairs():
            variable.assign(tf.cast(shadow, variable.dtype))

    @contextlib.contextmanager
    def averaged_weights(self):
        """Runs the block with the averaged weights in the model, then restores the live ones."""
        variables = self._live.value
        live = [tf.identity(v) for v in variables]
        self.copy_to_variables()
        try:
            yield
        finally:
            for variable, value in zip(variables, live):
                variable.assign(value)
