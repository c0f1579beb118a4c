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

import contextlib
import functools

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from efficientdet_tf.errors import ConfigError

# What a refusal offers instead.
PREDICTS_EVERYWHERE = ("predict, evaluate, --mode=infer and --mode=eval run on every backend, "
                       "e.g. with weights trained on TensorFlow")

_LABELS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}

# The values of --strategy: one device, the local GPUs, TF_CONFIG's workers, a TPU.
STRATEGIES = ("default", "gpus", "multi-worker", "tpu")


class BackendError(ConfigError):
    """A feature asked for on a Keras backend that cannot run it."""


class Replicas:
    """How a training step's replicas combine: `sum` adds a value over them, `count` says how
    many. Under tf.distribute each replica runs the step on its share of the batch and the sums
    are all-reduces. A program that sees the whole global batch (one device, or JAX with the batch
    sharded over devices, where XLA adds across them) is one replica: `Replicas()`.
    """

    def __init__(self, sum_fn=None, count: int = 1):
        self._sum = sum_fn or (lambda value: value)
        self.count = count

    def sum(self, value):
        return self._sum(value)


class Backend:
    """A Keras backend as the package uses it. This base is the generic one (Keras's NumPy and
    OpenVINO backends: they predict, but take no gradients); the subclasses override what their
    framework does otherwise."""

    trains = False  # whether `ObjectDetector.fit` runs here
    jit_compiles_training = False  # whether the training step is compiled with XLA by default
    grad_checkpoint_refusal = None  # why hparam grad_checkpoint=true cannot train here, if so

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

    # --- training ---------------------------------------------------------------------------

    def check_training(self, config) -> None:
        """Refuses, in one line, training `config` here: a backend without gradients, or an
        hparam this backend's step cannot honour."""
        self.require_training()
        if config.grad_checkpoint and self.grad_checkpoint_refusal:
            raise ConfigError(f"hparam grad_checkpoint=true trains on TensorFlow only: "
                              f"{self.grad_checkpoint_refusal} Train with grad_checkpoint=false, "
                              "or with KERAS_BACKEND=tensorflow.")

    def train_step(self, model: keras.Model, step, data, state=None):
        """Keras's `train_step` hook of `model`: one step of `step`'s recipe (a
        `training.step.TrainingStep`) on the batch `data` = (images, labels). Returns the logs;
        on JAX, whose trainer is stateless, `state` holds the variables' values and the result
        is (logs, new state)."""
        raise NotImplementedError(f"{self.label} does not train (check_training refuses it).")

    def make_train_function(self, model: keras.Model, make, force: bool):
        """Keras's `make_train_function` hook of `model`, `make` being Keras's own."""
        return make(force)

    def distributed_dataset(self, distribution, make_dataset, global_batch_size: int):
        """The training batches under `distribution`: `make_dataset(batch_size, input_context)`
        of the global batch, which Keras shards over the distribution's devices itself."""
        return make_dataset(global_batch_size, None)

    # --- distribution -----------------------------------------------------------------------

    def join_processes(self, strategy: str, timeout_s: int) -> None:
        """Joins this process to the other processes that `--strategy=strategy` trains with,
        waiting up to `timeout_s` for them; called before the framework computes anything.
        Here nothing to join (TensorFlow's workers meet in their strategy, from TF_CONFIG)."""

    def make_distribution(self, name: str, tpu: str | None = None, tpu_zone: str | None = None,
                          gcp_project: str | None = None):
        """The distribution over devices that `--strategy=name` means here (None: one device);
        build the model in `distribution_scope` of it. Here Keras distributes nothing: only
        `default`."""
        check_strategy_name(name)
        if name != "default":
            raise ConfigError(
                f"--strategy={name}: Keras distributes no training on {self.label}, which trains "
                "on one device here. Run --strategy=default, or train on several devices with "
                "KERAS_BACKEND=jax (gpus, tpu) or KERAS_BACKEND=tensorflow.")
        return None

    def current_distribution(self):
        """The distribution in effect: the Keras distribution, or None (one device)."""
        return keras.distribution.distribution()

    def distribution_scope(self, distribution):
        """The context that makes `distribution` (of `current_distribution`) current."""
        return distribution.scope() if distribution is not None else contextlib.nullcontext()

    def num_replicas(self, distribution) -> int:
        """The devices a global batch is split over."""
        return 1 if distribution is None else int(distribution.device_mesh.devices.size)

    def cross_replica_batch_norm(self, distribution) -> bool:
        """Whether batch norms must synchronize their statistics explicitly (they need not where
        the compiled step sees the whole sharded batch)."""
        return False

    def is_chief(self, distribution) -> bool:
        """Whether this process is the chief of its cluster (always, outside multi-worker)."""
        resolver = getattr(distribution, "cluster_resolver", None)
        cluster = resolver.cluster_spec().as_dict() if resolver else {}
        if not cluster or resolver.task_type == "chief":
            return True
        return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster

    def accelerator(self, distribution) -> str:
        """'tpu', 'gpu' or 'cpu': the kind of device `distribution` trains on."""
        return "cpu"


def check_strategy_name(name: str) -> None:
    if name not in STRATEGIES:
        raise ConfigError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


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
