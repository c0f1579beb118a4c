"""The JAX backend: Keras's stateless step under `jax.jit`, `keras.distribution` for devices."""

from __future__ import annotations

import functools
import logging

import jax
import keras

from efficientdet_tf.backends.base import Backend


class JaxBackend(Backend):
    trains = True

    def __init__(self):
        super().__init__("jax")

    # --- inference and kernels ------------------------------------------------------------

    def compile_function(self, function, variables, input_specs):
        """One `jax.jit` function of the variables' values (read at each call) and of the inputs
        (XLA compiles it for each new batch size); NumPy arrays in and out."""

        def with_values(values, *inputs):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function(*inputs)

        compiled = jax.jit(with_values)

        def call(*inputs) -> dict:
            values = [variable.value for variable in variables]
            return self.call_on_pipeline_tensors(functools.partial(compiled, values), *inputs)

        return call

    def probe_devices(self):
        """`jax.devices()`, with JAX's info line on absent CUDA and TPU (from Python) quieted."""
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        jax.devices()
