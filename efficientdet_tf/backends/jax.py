"""The JAX backend: the training step as Keras's stateless `train_step(state, data)` under
`jax.jit`, and `keras.distribution.DataParallel` over the devices of one process or of several
(joined in `jax_processes`).

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
import tensorflow as tf

from efficientdet_tf.backends import jax_processes
from efficientdet_tf.backends.base import Backend, Replicas, check_strategy_name

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
        _quiet_device_search()
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

    def join_processes(self, strategy, timeout_s):
        """`multi-worker`: the processes Keras's environment variables describe; `tpu`: the
        hosts of the TPU pod slice (see `jax_processes`)."""
        _quiet_device_search()  # joining starts JAX
        if strategy == "multi-worker":
            jax_processes.join(jax_processes.ProcessGroup.from_environment(), timeout_s)
        elif strategy == "tpu":
            jax_processes.join_tpu_hosts(timeout_s)

    def make_distribution(self, name, tpu=None, tpu_zone=None, gcp_project=None):
        """`keras.distribution.DataParallel` over the devices of every joined process
        (`join_processes`): the local GPUs for `gpus`, the TPU chips for `tpu`, the processes'
        devices for `multi-worker`; None (one device) for `default`. `--tpu` names nothing on
        JAX: JAX finds the TPU VM's hosts itself."""
        check_strategy_name(name)
        if name == "default":
            return None
        if name == "tpu" and tpu not in (None, "local"):
            log.info("--tpu=%s: JAX finds the hosts of the TPU VM it runs on itself.", tpu)
        devices = keras.distribution.list_devices()
        expected = _DEVICE_KINDS.get(name)
        if expected and not any(device.lower().startswith(expected) for device in devices):
            log.warning("--strategy=%s, but JAX finds no %s (devices: %s): training runs on them.",
                        name, expected.upper(), ", ".join(devices))
        return keras.distribution.DataParallel(devices=devices)

    def distributed_dataset(self, distribution, make_dataset, global_batch_size):
        """The global batch on one process; with several, each reads its own shard of the data
        (`make_dataset(per_process_batch, input_context)`), which Keras then leaves as it is."""
        processes = jax.process_count()
        if distribution is None or processes == 1:
            return make_dataset(global_batch_size, None)
        distribution.auto_shard_dataset = False
        context = tf.distribute.InputContext(
            num_input_pipelines=processes, input_pipeline_id=jax.process_index(),
            num_replicas_in_sync=self.num_replicas(distribution))
        return make_dataset(global_batch_size // processes, context)

    def is_chief(self, distribution) -> bool:
        """Process 0 writes the checkpoints and logs of a run in several processes."""
        return jax.process_index() == 0

    def accelerator(self, distribution) -> str:
        devices = (keras.distribution.list_devices() if distribution is None
                   else [str(d) for d in distribution.device_mesh.devices.flatten()])
        kind = devices[0].lower()
        return "tpu" if kind.startswith("tpu") else "gpu" if kind.startswith("gpu") else "cpu"


def _quiet_device_search() -> None:
    """Hides JAX's info line on the platforms it did not find (CUDA, TPU), logged once when it
    first looks for its devices."""
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


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
