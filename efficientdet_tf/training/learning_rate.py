"""Learning-rate schedules of the official recipe: linear warm-up, then cosine, steps or polynomial.

The base rate is `learning_rate` for a global batch of 64 images, scaled linearly with the batch.
The decays run on the global step, as the official ones: `cosine` is
0.5 * peak * (1 + cos(pi * step / (total_steps - warmup_steps))), so it starts below the peak,
reaches 0 one warm-up before the end and rises a little in the last warm-up's worth of steps.
`cosine_after_warmup` starts the cosine when the warm-up ends instead (peak to 0 exactly over
the remaining steps), which matters only in short runs such as the synthetic demo.

In `keras.ops`: the optimizer evaluates the schedule on its `iterations` on any backend.
"""

from __future__ import annotations

import math

import keras
from keras import ops

REFERENCE_BATCH_SIZE = 64


class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `warmup_init` to the scaled rate over `warmup_steps`, then decay."""

    def __init__(self, config, global_batch_size: int, steps_per_epoch: int,
                 num_epochs: int | None = None):
        """`num_epochs`: the length of the run, config.num_epochs when None."""
        if config.lr_decay_method not in DECAYS:
            raise ValueError(f"Unknown lr_decay_method {config.lr_decay_method!r}; known: "
                             f"{', '.join(DECAYS)}.")
        self.method = config.lr_decay_method
        self.peak = config.learning_rate * global_batch_size / REFERENCE_BATCH_SIZE
        self.warmup_init = config.lr_warmup_init
        self.warmup_steps = max(1, int(config.lr_warmup_epoch * steps_per_epoch))
        self.total_steps = max(1, int((num_epochs or config.num_epochs) * steps_per_epoch))
        self.drop_steps = (
            int(config.first_lr_drop_epoch * steps_per_epoch),
            int(config.second_lr_drop_epoch * steps_per_epoch),
        )
        self.poly_power = config.poly_lr_power

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.warmup_init + step / self.warmup_steps * (self.peak - self.warmup_init)
        return ops.where(step < self.warmup_steps, warmup, self._decayed(step))

    def _decayed(self, step):
        return DECAYS[self.method](self, step)

    def get_config(self):
        return {"method": self.method, "peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}


def _cosine(schedule: WarmupSchedule, step):
    decay_steps = max(1, schedule.total_steps - schedule.warmup_steps)
    return 0.5 * schedule.peak * (1 + ops.cos(math.pi * step / decay_steps))


def _cosine_after_warmup(schedule: WarmupSchedule, step):
    decay_steps = max(1, schedule.total_steps - schedule.warmup_steps)
    progress = ops.minimum((step - schedule.warmup_steps) / decay_steps, 1.0)
    return 0.5 * schedule.peak * (1 + ops.cos(math.pi * progress))


def _stepwise(schedule: WarmupSchedule, step):
    first_drop, second_drop = schedule.drop_steps
    return schedule.peak * ops.where(step < first_drop, 1.0,
                                     ops.where(step < second_drop, 0.1, 0.01))


def _polynomial(schedule: WarmupSchedule, step):
    remaining = ops.maximum(1.0 - step / schedule.total_steps, 0.0)
    return schedule.peak * remaining**schedule.poly_power


# The decays after the warm-up, by hparam `lr_decay_method` (the config's schema reads these names).
DECAYS = {
    "cosine": _cosine,
    "cosine_after_warmup": _cosine_after_warmup,
    "stepwise": _stepwise,
    "polynomial": _polynomial,
}
