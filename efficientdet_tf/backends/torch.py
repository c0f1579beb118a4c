"""The PyTorch backend: the training step run eagerly, as Keras's torch trainer runs its own
`train_step`, on one device (Keras distributes nothing on PyTorch: its GPU if it has one).

Keras's torch variables are `torch.nn.Parameter`s, so autograd takes the gradient of the loss
with `backward()`; the batch norms' statistics, the weight average and the optimizer update their
variables in place, as on TensorFlow.
"""

from __future__ import annotations

import torch

from efficientdet_tf.backends.base import Backend, Replicas


class TorchBackend(Backend):
    trains = True
    grad_checkpoint_refusal = ("on PyTorch, the recomputation in the backward pass updates the "
                               "batch norms' statistics a second time.")

    def __init__(self):
        super().__init__("torch")

    # --- training ---------------------------------------------------------------------------

    def train_step(self, model, step, data, state=None):
        images, labels = data
        optimizer = model.optimizer
        parts = step.losses(images, labels, Replicas())
        for variable in step.network.trainable_variables:
            variable.value.grad = None
        step.scale_loss(parts["loss"], optimizer).backward()
        gradients = [variable.value.grad for variable in step.trainable]
        with torch.no_grad():
            step.apply(step.clip_gradients(gradients, Replicas(), optimizer), optimizer)
        return step.logs({name: value.detach() for name, value in parts.items()}, optimizer)

    # --- distribution -----------------------------------------------------------------------

    def accelerator(self, distribution) -> str:
        return "gpu" if torch.cuda.is_available() else "cpu"
