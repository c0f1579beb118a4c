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

import functools

import numpy as np
import tensorflow as tf
from keras import ops

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

    # --- inference and kernels ------------------------------------------------------------

    traces_tensorflow_graphs = False  # whether `tf.function` traces the network (FLOPs, export)

    def resize_nearest(self, features, size: tuple[int, int]):
        """Nearest-neighbour resizing of [batch, height, width, channels] as the official code's
        TF1 kernel does it (no half-pixel centres): output row `i` is input row
        floor(i * height / new_height), in float32 arithmetic. Here `gather_nearest`."""
        return gather_nearest(features, size)

    def add_n(self, tensors: list):
        """The sum of same-shaped tensors; here a chain of additions."""
        total = tensors[0]
        for tensor in tensors[1:]:
            total = total + tensor
        return total

    def argmax(self, values):
        """int32 argmax over the last axis, the lower index on ties."""
        return ops.argmax(values, axis=-1)

    def fused_nms(self):
        """The module of this backend's fused NMS kernels, which exported graphs keep (its
        `select_by_score` and `select_per_class_pairs` take `inference.nms`'s arguments and give
        (boxes, scores, classes, counts), zeros in the padding); None where it has none and
        `inference.nms`'s keras.ops NMS runs."""
        return None

    def call_on_pipeline_tensors(self, function, *inputs) -> dict:
        """`function`'s dict of outputs for float32 `inputs` from the TensorFlow input pipeline:
        here the inputs become NumPy arrays, which every backend takes, and so do the outputs."""
        return _numpy_outputs(function(*_numpy_inputs(inputs)))

    def compile_function(self, function, variables: list, input_specs: tuple):
        """`function` (of the backend's tensors, reading `variables`) compiled for inputs of
        `input_specs` (`tf.TensorSpec`s, any batch size) and called like
        `call_on_pipeline_tensors`, reading the variables' values at each call. Here it runs
        eagerly."""
        return functools.partial(self.call_on_pipeline_tensors, function)

    def checkpoint_variables(self, variables: dict) -> dict:
        """{key: Keras variable} -> {key: the TensorFlow variable a `tf.train.Checkpoint` saves
        for it}: here a new TensorFlow copy of its value (integers as int64, as Keras counters
        are on TensorFlow), which the caller keeps in step with the Keras variable."""
        copies = {}
        for key, variable in variables.items():
            value = ops.convert_to_numpy(variable)
            if value.dtype.kind in "iu":
                value = value.astype(np.int64)
            copies[key] = tf.Variable(value, trainable=False)
        return copies

    def probe_devices(self) -> None:
        """Makes the framework look for its devices now (the command line does it with the
        native log lines hidden); here nothing to probe."""


def gather_nearest(features, size: tuple[int, int], half_pixel_centers: bool = False):
    """`Backend.resize_nearest` in `keras.ops`: rows and columns of [batch, height, width, ...]
    gathered with indices known when the graph is built.

    With `half_pixel_centers`, output row `i` is input row floor((i + 0.5) * height / new_height)
    instead, as TF2's `tf.image.resize(method="nearest")` (which `keras.ops.image.resize` is not
    on JAX: its float rounding differs, e.g. 26 -> 11 rows).
    """
    for axis, new_size in ((1, size[0]), (2, size[1])):
        indices = _nearest_indices(features.shape[axis], new_size, half_pixel_centers)
        features = ops.take(features, indices, axis=axis)
    return features


def _nearest_indices(size: int, new_size: int, half_pixel_centers: bool) -> np.ndarray:
    scale = np.float32(size) / np.float32(new_size)
    offset = np.float32(0.5 if half_pixel_centers else 0.0)
    positions = np.floor((np.arange(new_size, dtype=np.float32) + offset) * scale)
    return np.minimum(positions.astype(np.int32), size - 1)


def _numpy_inputs(inputs) -> list[np.ndarray]:
    """Float32 inputs (TensorFlow's, from the input pipeline) as NumPy arrays."""
    return [np.asarray(tensor, np.float32) for tensor in inputs]


def _numpy_outputs(outputs: dict) -> dict[str, np.ndarray]:
    return {name: ops.convert_to_numpy(value) for name, value in outputs.items()}
