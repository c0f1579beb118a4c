"""Choosing the distribution of training over devices, and the mixed-precision policy that fits.

On TensorFlow a distribution is a tf.distribute strategy. On JAX it is a
`keras.distribution.DataParallel` (the batch sharded over the devices, the variables replicated):
`--strategy` names map onto it, except multi-worker (TF_CONFIG), which is TensorFlow's. Keras
distributes nothing on PyTorch: it trains on one device (its GPU if it has one). A model trains
under the distribution it was built in (`current_distribution`), as Keras models keep their
tf.distribute strategy.
"""

from __future__ import annotations

import contextlib
import logging
import re

import keras
import tensorflow as tf

from efficientdet_tf.errors import ConfigError

log = logging.getLogger(__name__)

STRATEGIES = ("default", "gpus", "multi-worker", "tpu")


def make_strategy(
    name: str,
    tpu: str | None = None,
    tpu_zone: str | None = None,
    gcp_project: str | None = None,
):
    """`default`: one device; `gpus`: MirroredStrategy over local GPUs; `multi-worker`:
    MultiWorkerMirroredStrategy from TF_CONFIG; `tpu`: TPUStrategy on `tpu` (name or address).
    On JAX, a DataParallel distribution or None (`jax_data_parallel`); on PyTorch, None."""
    if keras.backend.backend() == "jax":
        return jax_data_parallel(name, tpu)
    if keras.backend.backend() == "torch":
        return _torch_single_device(name)
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


def jax_data_parallel(name: str, tpu: str | None = None):
    """`keras.distribution.DataParallel` over the devices `--strategy=name` means on JAX: the
    local GPUs for `gpus`, the TPU VM's chips for `tpu`; None (one device) for `default`."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    if name == "multi-worker":
        raise ConfigError(
            "--strategy=multi-worker (TF_CONFIG) is TensorFlow's: run it with "
            "KERAS_BACKEND=tensorflow, or on JAX use --strategy=gpus or --strategy=tpu for the "
            "devices of this host.")
    if tpu not in (None, "local"):
        raise ConfigError(f"--tpu={tpu}: on JAX, training runs on the TPU VM's own chips; run "
                          "on the TPU VM with --strategy=tpu and without --tpu.")
    if name == "default":
        return None
    devices = keras.distribution.list_devices()
    if not any(device.lower().startswith(_JAX_DEVICE_KINDS[name]) for device in devices):
        log.warning("--strategy=%s, but JAX finds no %s (devices: %s): training runs on them.",
                    name, _JAX_DEVICE_KINDS[name].upper(), ", ".join(devices))
    return keras.distribution.DataParallel(devices=devices)


_JAX_DEVICE_KINDS = {"gpus": "gpu", "tpu": "tpu"}


def _torch_single_device(name: str) -> None:
    """None (one device) for `--strategy=default`; any other strategy is refused on PyTorch."""
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    if name != "default":
        raise ConfigError(
            f"--strategy={name}: Keras distributes no training on PyTorch, which trains on one "
            "device here. Run --strategy=default, or train on several devices with "
            "KERAS_BACKEND=jax (gpus, tpu) or KERAS_BACKEND=tensorflow.")
    return None


def current_distribution():
    """The distribution in effect: the tf.distribute strategy on TensorFlow; on JAX the Keras
    distribution, or None (one device)."""
    if keras.backend.backend() == "tensorflow":
        return tf.distribute.get_strategy()
    return keras.distribution.distribution()


def distribution_scope(distribution):
    """The context that makes `distribution` (of `current_distribution`) current."""
    return distribution.scope() if distribution is not None else contextlib.nullcontext()


def num_replicas(distribution) -> int:
    """The devices a global batch is split over."""
    if distribution is None:
        return 1
    if isinstance(distribution, tf.distribute.Strategy):
        return distribution.num_replicas_in_sync
    return distribution.device_mesh.devices.size


def cross_replica_batch_norm(distribution) -> bool:
    """Whether batch norms must synchronize their statistics explicitly: under tf.distribute
    with several replicas. On JAX they need not: XLA computes them over the whole sharded batch."""
    return isinstance(distribution, tf.distribute.Strategy) and num_replicas(distribution) > 1


def is_chief(distribution) -> bool:
    """Whether this process is the chief of its cluster (always, outside multi-worker)."""
    resolver = getattr(distribution, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver else {}
    if not cluster or resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def _first_sentence(error: Exception) -> str:
    """An error's message up to its first full stop or line end (TensorFlow's run on)."""
    text = str(error).strip() or type(error).__name__
    return re.split(r"\.\s|\.$|\n", text, maxsplit=1)[0]


def set_mixed_precision(enabled: bool, distribution) -> str:
    """Sets the global Keras dtype policy: bfloat16 on TPU and CPU, float16 on GPU."""
    if not enabled:
        policy = "float32"
    elif (isinstance(distribution, tf.distribute.TPUStrategy)
          or not _has_gpu(distribution)):
        policy = "mixed_bfloat16"
    else:
        policy = "mixed_float16"
    keras.config.set_dtype_policy(policy)
    log.info("Dtype policy: %s", policy)
    return policy


def _has_gpu(distribution) -> bool:
    if keras.backend.backend() == "torch":
        import torch  # PyTorch is optional

        return torch.cuda.is_available()
    if keras.backend.backend() == "jax":
        devices = (keras.distribution.list_devices() if distribution is None
                   else [str(d) for d in distribution.device_mesh.devices.flatten()])
        return devices[0].lower().startswith("gpu")
    return bool(tf.config.list_logical_devices("GPU"))
