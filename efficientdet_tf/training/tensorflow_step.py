"""The training step on TensorFlow: `TrainingStep`'s recipe on one replica of a tf.distribute
strategy, with a gradient tape and the model's variables updated in place."""

from __future__ import annotations

import tensorflow as tf

from efficientdet_tf.training.step import Replicas, TrainingStep, loss_scale, scale_loss


def tensorflow_train_step(step: TrainingStep, images, labels, optimizer) -> dict[str, tf.Tensor]:
    """One step on this replica's share of the batch; returns the global batch's loss parts."""
    context = tf.distribute.get_replica_context()
    replicas = Replicas(lambda value: context.all_reduce(tf.distribute.ReduceOp.SUM, value),
                        context.num_replicas_in_sync)
    with tf.GradientTape() as tape:
        parts = step.losses(images, labels, replicas)
        scaled_loss = scale_loss(optimizer, parts["loss"])
    gradients = tape.gradient(scaled_loss, step.trainable)
    gradients = step.clip_gradients(gradients, replicas, loss_scale(optimizer))
    before = tf.identity(optimizer.iterations)
    optimizer.apply_gradients(zip(gradients, step.trainable))  # sums over replicas
    # Loss scaling skips a step whose gradients overflow; the average skips it too, as in the
    # official trainer (its average sits inside the loss scale optimizer).
    step.average.update(applied=optimizer.iterations > before)
    return replicas.sum(parts)
