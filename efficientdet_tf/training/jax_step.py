"""The training step on JAX: `TrainingStep`'s recipe as Keras's stateless JAX `train_step`.

Keras's JAX trainer hands the step the values of the model's variables (trainable,
non-trainable, optimizer's, metrics') and takes back their new values. The recipe is written
statefully (`variable.assign`), so it runs here inside `keras.StatelessScope`s that map each
variable to its value and collect what it assigns: the batch norms' statistics, the random
seeds, the weight average. With `keras.distribution.DataParallel` the batch arrives sharded over
the devices and XLA sums across them, so the step sees the global batch as one replica.
"""

from __future__ import annotations

import jax
import keras

from efficientdet_tf.training.step import Replicas, loss_scale, scale_loss


def jax_train_step(detector: keras.Model, state: tuple, data) -> tuple[dict, tuple]:
    """Keras's JAX `train_step(state, data)` of `detector` (an `ObjectDetector`)."""
    trainable, non_trainable, optimizer_values, metrics_values = state
    images, labels = data
    step, optimizer = detector.training_step, detector.optimizer
    trained = _positions(detector.trainable_variables, step.trainable)

    def scope(trainable, non_trainable, optimizer_values):
        return keras.StatelessScope(state_mapping=[
            *zip(detector.trainable_variables, trainable),
            *zip(detector.non_trainable_variables, non_trainable),
            *zip(optimizer.variables, optimizer_values)])

    def scaled_loss(trained_values):
        with scope(_replaced(trainable, trained, trained_values), non_trainable,
                   optimizer_values) as losses_scope:
            parts = step.losses(images, labels, Replicas())
            scaled = scale_loss(optimizer, parts["loss"])
        return scaled, (parts, _current(losses_scope, detector.non_trainable_variables))

    trained_values = [trainable[i] for i in trained]
    (_, (parts, non_trainable)), gradients = jax.value_and_grad(scaled_loss, has_aux=True)(
        trained_values)
    with scope(trainable, non_trainable, optimizer_values):
        gradients = step.clip_gradients(gradients, Replicas(), loss_scale(optimizer))
        iterations_before = optimizer.iterations.value
    trained_values, optimizer_values = optimizer.stateless_apply(
        optimizer_values, gradients, trained_values)
    trainable = _replaced(trainable, trained, trained_values)
    with scope(trainable, non_trainable, optimizer_values) as average_scope:
        # A step that float16 loss scaling skipped leaves the average too.
        step.average.update(applied=optimizer.iterations.value > iterations_before)
        logs = {**parts, "learning_rate": optimizer.learning_rate}
    non_trainable = _current(average_scope, detector.non_trainable_variables)
    return logs, (trainable, non_trainable, optimizer_values, metrics_values)


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
