"""What runs on which Keras backend, and the one-line refusal of what does not run there.

The network, its post-processing, weights loading, `Detector`, `ObjectDetector.predict` and
`evaluate`, and `--mode=infer` / `--mode=eval` run on every Keras backend (TensorFlow, JAX,
PyTorch; chosen by `KERAS_BACKEND`), and so does training (not on Keras's NumPy or OpenVINO
backends, which take no gradients). Export (SavedModel, TFLite, ONNX, OpenVINO),
`--mode=benchmark` and the FLOPs of `--mode=summary` are TensorFlow programs. On another
backend each is refused at once, before any work, by `require_backend`.
"""

from __future__ import annotations

import keras

TRAINING_BACKENDS = ("tensorflow", "jax", "torch")

# What a refusal offers instead.
PREDICTS_EVERYWHERE = ("predict, evaluate, --mode=infer and --mode=eval run on every backend, "
                       "e.g. with weights trained on TensorFlow")


class BackendError(ValueError):
    """A feature asked for on a Keras backend that cannot run it."""


def require_backend(feature: str, backends: tuple[str, ...], instead: str = "") -> None:
    """Raises `BackendError` naming `feature`, the backend and what to do, unless the Keras
    backend is one of `backends`."""
    backend = keras.backend.backend()
    if backend in backends:
        return
    names = " or ".join(_NAMES[name] for name in backends)
    choices = " or ".join(f"KERAS_BACKEND={name}" for name in backends)
    raise BackendError(
        f"{feature} runs on the {names} backend only, and KERAS_BACKEND is {backend!r}: "
        f"run it with {choices}{'; ' + instead if instead else ''}.")


def require_tensorflow(feature: str, instead: str = "") -> None:
    """`require_backend` for a TensorFlow program."""
    require_backend(feature, ("tensorflow",), instead)


_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
