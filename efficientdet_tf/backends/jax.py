"""The JAX backend: the training step as Keras's stateless `train_step(state, data)` under
`jax.jit`, and `keras.distribution.DataParallel` over the devices.

Keras's JAX trainer hands the step the values of the model's variables (trainable,
non-trainable, optimizer's, metrics') and takes back their new values. The recipe is written
statefully (`variable.assign`), so it runs here inside `keras.StatelessScope`s that map each
variable to its value and collect what it assigns: the batch norms' statistics, the random
seeds, the weight average. With `keras.distribution.DataParallel` the batch arrives sharded over
the devices and XLA sums across them, so the step sees the global batch as one replica.
"""

from __future__ import annotations

import functools
import logging

import jax
import keras

from efficientdet_tf.backends.base import Backend, Replicas, check_strategy_name
from efficientdet_tf.errors import ConfigError

log = logging.getLogger(__name__)

_DEVICE_KINDS = {"gpus": "gpu", "tpu": "tpu"}  # --strategy -> the devices it means


class JaxBackend(Backend):
    trains = True
    jit_compiles_training = True
    grad_checkpoint_refusal = ("on JAX, Keras's rematerialization cannot carry the batch norms' "
                               "statistics out of the stateless step.")

    def __init__(self):
        super().__init__("jax")

    # --- inference and kernels ------------------------------------------------------------

    def compile_function(self, function, variables, input_specs):
        """One `jax.jit` function of the variables' values (read at each call) and of the inputs
        (XLA compiles it for each new batch size); NumPy arrays in and out."""

        def with_values(values, *inputs):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function(*inputs)

        compiled = jax.jit(with_values)

        def call(*inputs) -> dict:
            values = [variable.value for variable in variables]
            return self.call_on_pipeline_tensors(functools.partial(compiled, values), *inputs)

        return call

    def probe_devices(self):
        """`jax.devices()`, with JAX's info line on absent CUDA and TPU (from Python) quieted."""
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
        jax.devices()

    # --- training ---------------------------------------------------------------------------

    def train_step(self, model, step, data, state=None):
        trainable, non_trainable, optimizer_values, metrics_values = state
        images, labels = data
        optimizer = model.optimizer
        trained = _positions(model.trainable_variables, step.trainable)

        def scope(trainable, non_trainable, optimizer_values):
            return keras.StatelessScope(state_mapping=[
                *zip(model.trainable_variables, trainable),
                *zip(model.non_trainable_variables, non_trainable),
                *zip(optimizer.variables, optimizer_values)])

        def scaled_loss(trained_values):
            with scope(_replaced(trainable, trained, trained_values), non_trainable,
                       optimizer_values) as losses_scope:
                parts = step.losses(images, labels, Replicas())
                scaled = step.scale_loss(parts["loss"], optimizer)
            return scaled, (parts, _current(losses_scope, model.non_trainable_variables))

        trained_values = [trainable[i] for i in trained]
        (_, (parts, non_trainable)), gradients = jax.value_and_grad(scaled_loss, has_aux=True)(
            trained_values)
        with scope(trainable, non_trainable, optimizer_values):
            gradients = step.clip_gradients(gradients, Replicas(), optimizer)
            iterations_before = optimizer.iterations.value
        trained_values, optimizer_values = optimizer.stateless_apply(
            optimizer_values, gradients, trained_values)
        trainable = _replaced(trainable, trained, trained_values)
        with scope(trainable, non_trainable, optimizer_values) as average_scope:
            # A step that float16 loss scaling skipped leaves the average too.
            step.average.update(applied=optimizer.iterations.value > iterations_before)
            logs = step.logs(parts, optimizer)
        non_trainable = _current(average_scope, model.non_trainable_variables)
        return logs, (trainable, non_trainable, optimizer_values, metrics_values)

    # --- distribution -----------------------------------------------------------------------

    def make_distribution(self, name, tpu=None, tpu_zone=None, gcp_project=None):
        """`keras.distribution.DataParallel` over the local GPUs for `gpus`, the TPU VM's chips
        for `tpu`; None (one device) for `default`."""
        check_strategy_name(name)
        if name == "multi-worker":
            raise ConfigError(
                "--strategy=multi-worker (TF_CONFIG) is TensorFlow's: run it with "
                "KERAS_BACKEND=tensorflow, or on JAX use --strategy=gpus or --strategy=tpu for "
                "the devices of this host.")
        if tpu not in (None, "local"):
            raise ConfigError(f"--tpu={tpu}: on JAX, training runs on the TPU VM's own chips; "
                              "run on the TPU VM with --strategy=tpu and without --tpu.")
        if name == "default":
            return None
        devices = keras.distribution.list_devices()
        if not any(device.lower().startswith(_DEVICE_KINDS[name]) for device in devices):
            log.warning("--strategy=%s, but JAX finds no %s (devices: %s): training runs on them.",
                        name, _DEVICE_KINDS[name].upper(), ", ".join(devices))
        return keras.distribution.DataParallel(devices=devices)

    def accelerator(self, distribution) -> str:
        devices = (keras.distribution.list_devices() if distribution is None
                   else [str(d) for d in distribution.device_mesh.devices.flatten()])
        kind = devices[0].lower()
        return "tpu" if kind.startswith("tpu") else "gpu" if kind.startswith("gpu") else "cpu"


def _positions(variables: list, chosen: list) -> list[int]:
    """The indices in `variables` of the `chosen` ones (the same objects)."""
    index = {id(v): i for i, v in enumerate(variables)}
    return [index[id(v)] for v in chosen]


def _replaced(values: list, positions: list[int], new_values: list) -> list:
    values = list(values)
    for position, value in zip(positions, new_values):
        values[position] = value
    return values


def _current(scope: keras.StatelessScope, variables: list) -> list:
    """The values `variables` have at the end of `scope`: assigned there, else as mapped."""
    return [scope.get_current_value(v) for v in variables]
