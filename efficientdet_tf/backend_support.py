"""What runs on which Keras backend, and the one-line refusal of what does not run there.

The network, its post-processing, weights loading, `Detector`, `ObjectDetector.predict` and
`evaluate`, and `--mode=infer` / `--mode=eval` run on every Keras backend (TensorFlow, JAX,
PyTorch; chosen by `KERAS_BACKEND`). Training, export (SavedModel, TFLite), `--mode=benchmark`
and the FLOPs of `--mode=summary` are TensorFlow programs: on another backend they are refused
at once, before any work, by `require_tensorflow`.
"""

from __future__ import annotations

import keras

# What a refusal offers instead.
PREDICTS_EVERYWHERE = ("predict, evaluate, --mode=infer and --mode=eval run on every backend, "
                       "e.g. with weights trained on TensorFlow")


class BackendError(ValueError):
    """A feature asked for on a Keras backend that cannot run it."""


def require_tensorflow(feature: str, instead: str = "") -> None:
    """Raises `BackendError` naming `feature`, the backend and what to do, unless the Keras
    backend is TensorFlow."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    raise BackendError(
        f"{feature} runs on the TensorFlow backend only, and KERAS_BACKEND is {backend!r}: "
        f"run it with KERAS_BACKEND=tensorflow{'; ' + instead if instead else ''}.")
