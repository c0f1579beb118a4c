"""The TensorFlow backend, the reference: tf.distribute strategies, the step under a gradient
tape, and the TensorFlow kernels that exported graphs keep."""

from __future__ import annotations

import tensorflow as tf  # noqa: F401  (used by the methods below)

from efficientdet_tf.backends.base import Backend


class TensorFlowBackend(Backend):
    trains = True

    def __init__(self):
        super().__init__("tensorflow")
