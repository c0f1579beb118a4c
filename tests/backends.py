"""The Keras backend the tests run under, and a marker for TensorFlow-only tests.

The suite runs on TensorFlow; `KERAS_BACKEND=jax python -m pytest -m any_backend` runs the tests
marked `any_backend` again on JAX (README). In a module marked `any_backend`, `tensorflow_only`
keeps a test (e.g. about `tf.function` graphs) to the TensorFlow run.
"""

import keras
import pytest

BACKEND = keras.backend.backend()

tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason=f"a TensorFlow-only feature; KERAS_BACKEND is {BACKEND}")
