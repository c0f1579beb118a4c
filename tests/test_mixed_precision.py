"""Training under Keras's mixed_float16 policy: dynamic loss scaling skips overflowing steps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf import get_config
from efficientdet_tf.training.trainer import Trainer, TrainSettings

TINY = ("image_size=64,num_classes=3,fpn_cell_repeats=1,box_class_repeats=1,"
        "input_rand_hflip=false,jitter_min=1.0,jitter_max=1.0")
HARMLESS_SCALE = 1.0  # float16 gradients of this tiny model stay far below 65504
OVERFLOWING_SCALE = 1e30  # representable in the float32 scale, inf in any float16 gradient


@pytest.fixture
def float16_trainer(tmp_path):
    keras.backend.clear_session()  # before the policy: clearing the session resets it
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    tf.keras.utils.set_random_seed(1)
    try:
        settings = TrainSettings(model_dir=str(tmp_path), global_batch_size=2, steps_per_epoch=4,
                                 num_epochs=1)
        trainer = Trainer(get_config("efficientdet-d0", TINY), settings)
        trainer.restore_or_initialize()
        yield trainer
    finally:
        keras.config.set_dtype_policy(previous)


def _state(trainer):
    return ([v.numpy() for v in trainer.trainable],
            {path: value.numpy() for path, value in trainer.ema.values_by_path().items()})


def _changed(before, after):
    return [not np.array_equal(b, a) for b, a in zip(before, after)]


def test_an_overflowing_step_is_skipped_and_the_loss_scale_halves(float16_trainer):
    trainer = float16_trainer
    optimizer = trainer.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.model.get_layer("class_net").compute_dtype == "float16"
    assert all(v.dtype == "float32" for v in trainer.model.weights)
    iterator = iter(trainer.distributed_dataset("synthetic:train:4", seed=0))

    optimizer.dynamic_scale.assign(HARMLESS_SCALE)
    weights, averages = _state(trainer)
    logs = trainer.run_steps(iterator, 1)
    assert trainer.step == 1 and np.isfinite(logs["loss"])
    moved = _changed(weights, _state(trainer)[0])
    assert sum(moved) > 0.8 * len(moved)  # at scale 1 some tiny float16 gradients underflow to 0
    assert float(optimizer.dynamic_scale) == HARMLESS_SCALE  # raised only after 2000 good steps

    optimizer.dynamic_scale.assign(OVERFLOWING_SCALE)
    weights, averages = _state(trainer)
    logs = trainer.run_steps(iterator, 1)  # the loss itself is finite: training goes on
    assert np.isfinite(logs["loss"])
    assert trainer.step == 1  # not counted
    new_weights, new_averages = _state(trainer)
    assert not any(_changed(weights, new_weights))
    assert not any(_changed(list(averages.values()), list(new_averages.values())))
    assert float(optimizer.dynamic_scale) == pytest.approx(OVERFLOWING_SCALE / 2)
