"""Choosing the tf.distribute strategy and the mixed-precision policy that fits it."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

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
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu, zone=tpu_zone, project=gcp_project)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


def set_mixed_precision(enabled: bool, strategy: tf.distribute.Strategy) -> str:
    """Sets the global Keras dtype policy: bfloat16 on TPU and CPU, float16 on GPU."""
    if not enabled:
        policy = "float32"
    elif isinstance(strategy, tf.distribute.TPUStrategy) or not tf.config.list_logical_devices("GPU"):
        policy = "mixed_bfloat16"
    else:
        policy = "mixed_float16"
    keras.config.set_dtype_policy(policy)
    log.info("Dtype policy: %s", policy)
    return policy
