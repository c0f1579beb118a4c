"""The TensorFlow backend, the reference: tf.distribute strategies, the step under a gradient
tape, and the TensorFlow kernels that exported graphs keep."""

from __future__ import annotations

import logging
import re

import tensorflow as tf

from efficientdet_tf.backends import tensorflow_nms
from efficientdet_tf.backends.base import Backend, Replicas, check_strategy_name
from efficientdet_tf.errors import ConfigError

log = logging.getLogger(__name__)


class TensorFlowBackend(Backend):
    trains = True

    def __init__(self):
        super().__init__("tensorflow")

    # --- inference and kernels ------------------------------------------------------------

    traces_tensorflow_graphs = True

    def resize_nearest(self, features, size):
        """TF1's ResizeNearestNeighbor kernel itself, in float32 as the official code (exported
        graphs convert it to ONNX and OpenVINO as such)."""
        resized = tf.raw_ops.ResizeNearestNeighbor(
            images=tf.cast(features, tf.float32), size=size, align_corners=False,
            half_pixel_centers=False)
        return tf.cast(resized, features.dtype)

    def add_n(self, tensors):
        """One AddN, as the official graph: tf2onnx converts a chain of additions of the
        feature fusions wrongly (the segmentation head's ONNX outputs were off by 15 with it;
        tests/test_deploy.py)."""
        return tf.add_n(tensors)

    def argmax(self, values):
        """tf.argmax: Keras's adds ops for the sign of zeros here, which ONNX and OpenVINO cannot
        convert from exported graphs."""
        return tf.argmax(values, axis=-1, output_type=tf.int32)

    def fused_nms(self):
        """`NonMaxSuppressionV5` and `combined_non_max_suppression` (`tensorflow_nms`)."""
        return tensorflow_nms

    def call_on_pipeline_tensors(self, function, *inputs):
        """`function(*inputs)` itself: TensorFlow ops all the way, so that it traces into a
        `tf.function` and a SavedModel."""
        return function(*inputs)

    def compile_function(self, function, variables, input_specs):
        """A `tf.function`'s concrete function for `input_specs`."""
        return tf.function(function).get_concrete_function(*input_specs)

    def checkpoint_variables(self, variables):
        """The Keras variables themselves: they are TensorFlow's."""
        return dict(variables)

    # --- training ---------------------------------------------------------------------------

    def train_step(self, model, step, data, state=None):
        """The recipe on this replica's share of the batch, under a gradient tape, the variables
        updated in place; the logs are the global batch's.

        The logs are sums over replicas, alike on every one, which Keras then averages over
        replicas. Under MultiWorkerMirroredStrategy it averages along axis 0, which fails on
        scalars: hence shape [1] here, and scalars again in `make_train_function`.
        """
        images, labels = data
        optimizer = model.optimizer
        step.record_inputs(images, optimizer)
        context = tf.distribute.get_replica_context()
        replicas = Replicas(lambda value: context.all_reduce(tf.distribute.ReduceOp.SUM, value),
                            context.num_replicas_in_sync)
        with tf.GradientTape() as tape:
            parts = step.losses(images, labels, replicas)
            scaled_loss = step.scale_loss(parts["loss"], optimizer)
        gradients = tape.gradient(scaled_loss, step.trainable)
        step.apply(step.clip_gradients(gradients, replicas, optimizer), optimizer)
        logs = step.logs(replicas.sum(parts), optimizer)
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}

    def make_train_function(self, model, make, force: bool):
        """The model's train function, turning `train_step`'s [1]-shaped logs into scalars."""
        if model.train_function is not None and not force:
            return model.train_function
        make(force=True)
        run_steps = model.train_function
        model.train_function = lambda iterator: {
            name: tf.reshape(value, []) for name, value in run_steps(iterator).items()}
        return model.train_function

    def distributed_dataset(self, distribution, make_dataset, global_batch_size: int):
        """Each replica's share of the batches, from `make_dataset(per_replica_batch_size,
        input_context)`: under multi-worker every worker reads its own shard."""
        per_replica = global_batch_size // distribution.num_replicas_in_sync
        return distribution.distribute_datasets_from_function(
            lambda input_context: make_dataset(per_replica, input_context))

    # --- distribution -----------------------------------------------------------------------

    def make_distribution(self, name, tpu=None, tpu_zone=None, gcp_project=None):
        """`default`: one device; `gpus`: MirroredStrategy over the local GPUs; `multi-worker`:
        MultiWorkerMirroredStrategy from TF_CONFIG; `tpu`: TPUStrategy on `tpu` (name or
        address)."""
        check_strategy_name(name)
        if name == "gpus":
            return _local_gpus_strategy()
        if name == "multi-worker":
            return tf.distribute.MultiWorkerMirroredStrategy()
        if name == "tpu":
            return _tpu_strategy(tpu, tpu_zone, gcp_project)
        return tf.distribute.get_strategy()

    def current_distribution(self):
        """The tf.distribute strategy in effect (Keras models keep the one they were built in)."""
        return tf.distribute.get_strategy()

    def num_replicas(self, distribution) -> int:
        return distribution.num_replicas_in_sync

    def cross_replica_batch_norm(self, distribution) -> bool:
        return self.num_replicas(distribution) > 1

    def accelerator(self, distribution) -> str:
        if isinstance(distribution, tf.distribute.TPUStrategy):
            return "tpu"
        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def _local_gpus_strategy() -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over the local GPUs; without one it runs on the CPU, which a run meant for
    GPUs should hear loudly."""
    strategy = tf.distribute.MirroredStrategy()
    if not tf.config.list_logical_devices("GPU"):
        found = ", ".join(device.name for device in tf.config.list_physical_devices())
        log.warning(
            "--strategy=gpus, but TensorFlow finds no GPU (devices: %s): training runs on %s. "
            "Check the GPU driver and CUDA libraries (`nvidia-smi`; `pip install "
            "tensorflow[and-cuda]`), or train with --strategy=default.",
            found, ", ".join(strategy.extended.worker_devices))
    return strategy


def _tpu_strategy(tpu: str | None, zone: str | None, project: str | None):
    """TPUStrategy on the TPU `tpu` names; a ConfigError naming the flags when none is reached."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu, zone=zone, project=project)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, OSError, tf.errors.OpError) as error:
        target = f"--tpu={tpu}" if tpu else "no --tpu given"
        raise ConfigError(
            f"--strategy=tpu found no TPU ({target}: {_first_sentence(error)}). Run it on a "
            "Cloud TPU VM with --tpu=local, or name a TPU node or pod slice with --tpu=<name> "
            "--tpu_zone=<zone> --gcp_project=<project> (or --tpu=grpc://<address>)."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def _first_sentence(error: Exception) -> str:
    """An error's message up to its first full stop or line end (TensorFlow's run on)."""
    text = str(error).strip() or type(error).__name__
    return re.split(r"\.\s|\.$|\n", text, maxsplit=1)[0]
