"""Training under Keras's mixed_float16 policy: dynamic loss scaling skips overflowing steps."""

import keras
import numpy as np
import pytest
from training_harness import dtype_policy, training_config  # noqa: F401 (a fixture)

from efficientdet_tf import ObjectDetector, backends, get_config
from efficientdet_tf.training.step import make_optimizer

# The five-block backbone: the traced float16 step of B0's 16 blocks is not the point.
CONFIG = training_config(five_blocks=True)
HARMLESS_SCALE = 1.0  # float16 gradients of this tiny model stay far below 65504
OVERFLOWING_SCALE = 1e30  # representable in the float32 scale, inf in any float16 gradient


class LossScalesAndStates(keras.callbacks.Callback):
    """Sets the loss scale before each step and records the state around it."""

    def __init__(self, scales):
        super().__init__()
        self.scales = list(scales)
        self.steps = []

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.dynamic_scale.assign(self.scales[len(self.steps)])
        self.before = _state(self.model)

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(dict(before=self.before, after=_state(self.model), logs=dict(logs),
                               scale=float(self.model.optimizer.dynamic_scale.numpy())))


def _state(detector):
    return dict(
        weights=[v.numpy() for v in detector.training_step.trainable],
        averages=list(detector.weight_average.values_by_path().values()),
        step=int(detector.optimizer.iterations.numpy()),
    )


def _changed(before, after):
    return [not np.array_equal(b, a) for b, a in zip(before, after)]


@pytest.fixture
def float16_detector(dtype_policy):  # noqa: F811
    keras.backend.clear_session()  # before the policy: clearing the session resets it
    dtype_policy("mixed_float16")
    keras.utils.set_random_seed(1)
    return ObjectDetector(CONFIG)


def test_an_overflowing_step_is_skipped_and_the_loss_scale_halves(float16_detector):
    detector = float16_detector
    assert detector.network.get_layer("class_net").compute_dtype == "float16"
    assert all(v.dtype == "float32" for v in detector.network.weights)
    record = LossScalesAndStates([HARMLESS_SCALE, OVERFLOWING_SCALE])
    detector.compile(run_eagerly=True)  # the step's arithmetic, not its tracing, is the point
    detector.fit("synthetic:train:4", epochs=1, batch_size=2, steps_per_epoch=2, seed=0,
                 verbose=0, callbacks=[record])
    assert isinstance(detector.optimizer, keras.optimizers.LossScaleOptimizer)
    harmless, overflowing = record.steps

    assert harmless["after"]["step"] == 1 and np.isfinite(harmless["logs"]["loss"])
    moved = _changed(harmless["before"]["weights"], harmless["after"]["weights"])
    assert sum(moved) > 0.8 * len(moved)  # at scale 1 some tiny float16 gradients underflow to 0
    assert harmless["scale"] == HARMLESS_SCALE  # raised only after 2000 good steps

    assert np.isfinite(overflowing["logs"]["loss"])  # the loss itself is finite: training goes on
    assert overflowing["after"]["step"] == 1  # not counted
    assert not any(_changed(overflowing["before"]["weights"], overflowing["after"]["weights"]))
    assert not any(_changed(overflowing["before"]["averages"], overflowing["after"]["averages"]))
    assert overflowing["scale"] == pytest.approx(OVERFLOWING_SCALE / 2)


def test_loss_scale_is_the_initial_dynamic_scale(dtype_policy):  # noqa: F811
    """official train_lib.get_optimizer: LossScaleOptimizer(initial_scale=loss_scale) under
    mixed_float16; null keeps Keras's default; float32 has no loss scaling."""
    for policy, loss_scale, expected in (("mixed_float16", "1024.0", 1024.0),
                                         ("mixed_float16", "null", 2.0**15),
                                         ("float32", "1024.0", None)):
        dtype_policy(policy)
        config = get_config("efficientdet-d0", f"loss_scale={loss_scale}")
        optimizer = make_optimizer(config, 8, steps_per_epoch=10, num_epochs=1)
        if expected is None:
            assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
            continue
        optimizer.build([keras.Variable(1.0)])
        assert float(optimizer.dynamic_scale.numpy()) == expected


@pytest.mark.parametrize("accelerator, compute_dtype, loss_scaling", [
    ("cpu", "float32", False), ("gpu", "float16", True), ("tpu", "bfloat16", False)])
def test_the_mixed_precision_hparam_picks_the_official_policy_for_the_device(
        monkeypatch, accelerator, compute_dtype, loss_scaling):
    """official utils.get_precision: bfloat16 on TPU, float16 on GPU, float32 on CPU; the model's
    layers take it, Keras's global policy stays the user's."""
    global_policy = keras.config.dtype_policy().name
    monkeypatch.setattr(type(backends.current()), "accelerator", lambda self, _: accelerator)
    detector = ObjectDetector(CONFIG.override("mixed_precision=true"))
    assert keras.config.dtype_policy().name == global_policy
    assert detector.network.get_layer("class_net").compute_dtype == compute_dtype
    assert all(v.dtype == "float32" for v in detector.network.weights)
    optimizer = make_optimizer(detector.config, 2, 1, 1, detector.network.dtype_policy)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == loss_scaling
