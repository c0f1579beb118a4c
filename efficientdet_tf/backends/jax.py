"""The JAX backend: Keras's stateless step under `jax.jit`, `keras.distribution` for devices."""

from __future__ import annotations

from efficientdet_tf.backends.base import Backend


class JaxBackend(Backend):
    trains = True

    def __init__(self):
        super().__init__("jax")
