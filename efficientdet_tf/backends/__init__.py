"""Every decision that depends on the Keras backend, behind one interface.

`current()` is the `Backend` of the process's Keras backend (`KERAS_BACKEND`, fixed when Keras is
imported): the rest of the package calls its methods and never asks which backend it is on. Its
subclasses (`tensorflow.py`, `jax.py`, `torch.py`) import their own framework, so JAX and PyTorch
stay optional. This is the lowest layer that `model/` and `inference/` use: what it runs (a
training step's recipe, a detector's function) is passed to it, never imported by it.
"""

from __future__ import annotations

import functools

import keras

from efficientdet_tf.backends.base import PREDICTS_EVERYWHERE, Backend, BackendError, Replicas

__all__ = ["PREDICTS_EVERYWHERE", "Backend", "BackendError", "Replicas", "current"]


@functools.cache
def current() -> Backend:
    """The `Backend` of Keras's backend; the only place that reads its name."""
    name = keras.backend.backend()
    if name == "tensorflow":
        from efficientdet_tf.backends.tensorflow import TensorFlowBackend

        return TensorFlowBackend()
    if name == "jax":
        from efficientdet_tf.backends.jax import JaxBackend

        return JaxBackend()
    if name == "torch":
        from efficientdet_tf.backends.torch import TorchBackend

        return TorchBackend()
    return Backend(name)
