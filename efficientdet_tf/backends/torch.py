"""The PyTorch backend: the step run eagerly with autograd, on one device (Keras distributes
nothing on PyTorch)."""

from __future__ import annotations

from efficientdet_tf.backends.base import Backend


class TorchBackend(Backend):
    trains = True

    def __init__(self):
        super().__init__("torch")
