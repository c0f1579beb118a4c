"""Ways a test breaks a training run on any backend: stopping it abruptly after a step (as a
kill would), and a loss that turns NaN."""

import keras
import numpy as np


class Interruption(Exception):
    pass


class InterruptAtStep(keras.callbacks.Callback):
    """Raises `Interruption` at the end of optimizer step `step` (after callbacks placed before
    it, such as a checkpoint saver, ran)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == self.step:
            raise Interruption


def make_loss_turn_nan_at_step_4(detector) -> None:
    """Replaces `detector`'s loss by one whose det_loss is NaN from the 4th step on."""
    real_loss = detector.training_step.loss

    def loss_turning_nan_at_step_4(*args):
        parts = real_loss(*args)
        poison = keras.ops.where(detector.optimizer.iterations >= 3, np.nan, 0.0)
        return {**parts, "det_loss": parts["det_loss"] + poison}

    detector.training_step.loss = loss_turning_nan_at_step_4
