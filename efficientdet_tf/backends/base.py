"""`Backend`: what every Keras backend does alike (the `keras.ops` way), and the one-line refusal
of what a backend cannot run.

The network, its post-processing, weights loading, `Detector`, `ObjectDetector.predict` and
`evaluate`, and `--mode=infer` / `--mode=eval` run on every Keras backend (TensorFlow, JAX,
PyTorch; chosen by `KERAS_BACKEND`), and so does training (not on Keras's NumPy or OpenVINO
backends, which take no gradients). Export (SavedModel, TFLite, ONNX, OpenVINO),
`--mode=benchmark` and the FLOPs of `--mode=summary` are TensorFlow programs. On another
backend each is refused at once, before any work, by `Backend.require`.
"""

from __future__ import annotations

from efficientdet_tf.errors import ConfigError

# What a refusal offers instead.
PREDICTS_EVERYWHERE = ("predict, evaluate, --mode=infer and --mode=eval run on every backend, "
                       "e.g. with weights trained on TensorFlow")

_LABELS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


class BackendError(ConfigError):
    """A feature asked for on a Keras backend that cannot run it."""


class Backend:
    """A Keras backend as the package uses it. This base is the generic one (Keras's NumPy and
    OpenVINO backends: they predict, but take no gradients); the subclasses override what their
    framework does otherwise."""

    trains = False  # whether `ObjectDetector.fit` runs here

    def __init__(self, name: str):
        self.name = name
        self.label = _LABELS.get(name, name)

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"

    # --- refusals -------------------------------------------------------------------------------

    def require(self, feature: str, names: tuple[str, ...], instead: str = "") -> None:
        """Raises `BackendError` naming `feature`, this backend and what to do, unless this
        backend is one of `names`."""
        if self.name in names:
            return
        labels = " or ".join(_LABELS[name] for name in names)
        choices = " or ".join(f"KERAS_BACKEND={name}" for name in names)
        raise BackendError(
            f"{feature} runs on the {labels} backend only, and KERAS_BACKEND is {self.name!r}: "
            f"run it with {choices}{'; ' + instead if instead else ''}.")

    def require_tensorflow(self, feature: str, instead: str = "") -> None:
        """`require` for a TensorFlow program (export, benchmark, FLOPs)."""
        self.require(feature, ("tensorflow",), instead)

    def require_training(self, feature: str = "Training (ObjectDetector.fit)") -> None:
        """Refuses training on a backend that takes no gradients."""
        if not self.trains:
            self.require(feature, tuple(name for name in _LABELS), PREDICTS_EVERYWHERE)
