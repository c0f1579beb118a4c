"""Choosing the tf.distribute strategy and the mixed-precision policy that fits it."""

from __future__ import annotations

import logging
import re

import keras
import tensorflow as tf

from efficientdet_tf.config import ConfigError

log = logging.getLogger(__name__)

STRATEGIES = ("default", "gpus", "multi-worker", "tpu")


def make_strategy(
    name: str,
    tpu: str | None = None,
    tpu_zone: str | None = None,
    gcp_project: str | None = None,
) -> tf.distribute.Strategy:
    """`default`: one device; `gpus`: MirroredStrategy over local GPUs; `multi-worker`:
    MultiWorkerMirroredStrategy from TF_CONFIG; `tpu`: TPUStrategy on `tpu` (name or address)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "gpus":
        return _local_gpus_strategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu, tpu_zone, gcp_project)
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


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


def set_mixed_precision(enabled: bool, strategy: tf.distribute.Strategy) -> str:
    """Sets the global Keras dtype policy: bfloat16 on TPU and CPU, float16 on GPU."""
    if not enabled:
        policy = "float32"
    elif (isinstance(strategy, tf.distribute.TPUStrategy)
          or not tf.config.list_logical_devices("GPU")):
        policy = "mixed_bfloat16"
    else:
        policy = "mixed_float16"
    keras.config.set_dtype_policy(policy)
    log.info("Dtype policy: %s", policy)
    return policy
