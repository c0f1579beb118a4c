"""The training step on PyTorch: `TrainingStep`'s recipe run eagerly, as Keras's torch trainer
runs its own `train_step`.

Keras's torch variables are `torch.nn.Parameter`s, so autograd takes the gradient of the loss
with `backward()`; the batch norms' statistics, the weight average and the optimizer update their
variables in place, as on TensorFlow. PyTorch trains on one device here: Keras has no
distribution for it.
"""

from __future__ import annotations

import torch

from efficientdet_tf.training.step import Replicas, TrainingStep, loss_scale, scale_loss


def torch_train_step(step: TrainingStep, images, labels, optimizer) -> dict:
    """One step on the whole batch; returns its loss parts."""
    parts = step.losses(images, labels, Replicas())
    for variable in step.network.trainable_variables:
        variable.value.grad = None
    scale_loss(optimizer, parts["loss"]).backward()
    gradients = [variable.value.grad for variable in step.trainable]
    with torch.no_grad():
        gradients = step.clip_gradients(gradients, Replicas(), loss_scale(optimizer))
        before = optimizer.iterations.value.clone()
        optimizer.apply(gradients, step.trainable)
        # A step that float16 loss scaling skipped leaves the average too.
        step.average.update(applied=optimizer.iterations.value > before)
    return {name: value.detach() for name, value in parts.items()}
