"""Learning-rate schedules of the official recipe."""

import math

import pytest

from efficientdet_tf import get_config
from efficientdet_tf.training.learning_rate import WarmupSchedule

pytestmark = pytest.mark.any_backend


def schedule(method, batch=128, steps_per_epoch=100):
    config = get_config("efficientdet-d0", f"lr_decay_method={method},num_epochs=10,"
                        "lr_warmup_epoch=1.0,first_lr_drop_epoch=5.0,second_lr_drop_epoch=8.0")
    return WarmupSchedule(config, batch, steps_per_epoch)


def rate(lr, step):
    return float(lr(step))


def test_warmup_is_linear_to_the_batch_scaled_rate():
    lr = schedule("stepwise")  # flat at the peak after the warm-up
    assert rate(lr, 0) == pytest.approx(0.008)
    assert rate(lr, 50) == pytest.approx(0.008 + 0.5 * (0.16 - 0.008))
    assert rate(lr, 100) == pytest.approx(0.16)  # 0.08 per 64 images, batch 128


def test_official_cosine_runs_on_the_global_step():
    """official tf2/train_lib_test.py::test_lr_schedule (cosine): CosineLrSchedule(1e-3, 1e-4,
    warm-up 1 step, 5 steps in all) at steps 0..4."""
    config = get_config("efficientdet-d0", "learning_rate=1e-3,lr_warmup_init=1e-4,"
                        "lr_warmup_epoch=1.0,num_epochs=5,lr_decay_method=cosine")
    lr = WarmupSchedule(config, global_batch_size=64, steps_per_epoch=1)
    assert [rate(lr, step) for step in range(5)] == pytest.approx(
        [1e-4, 8.535534e-4, 5e-4, 1.464466e-4, 0.0], abs=1e-10)


def test_official_cosine_reaches_zero_one_warmup_before_the_end():
    lr = schedule("cosine")  # 100 warm-up steps, 1000 in all
    assert rate(lr, 450) == pytest.approx(0.08, rel=1e-5)  # 0.5 * 0.16 * (1 + cos(pi / 2))
    assert rate(lr, 900) == pytest.approx(0.0, abs=1e-7)
    assert rate(lr, 1000) == pytest.approx(0.08 * (1 + math.cos(math.pi * 1000 / 900)), rel=1e-5)


def test_cosine_after_warmup_decays_from_the_peak_to_zero_at_the_end():
    lr = schedule("cosine_after_warmup")
    assert rate(lr, 100) == pytest.approx(0.16)
    assert rate(lr, 550) == pytest.approx(0.08, rel=1e-5)  # halfway through the decay
    assert rate(lr, 1000) == pytest.approx(0.0, abs=1e-7)
    assert rate(lr, 1200) == pytest.approx(0.0, abs=1e-7)


def test_stepwise_drops_tenfold_twice():
    lr = schedule("stepwise")
    assert [rate(lr, s) for s in (200, 499, 500, 799, 800)] == pytest.approx(
        [0.16, 0.16, 0.016, 0.016, 0.0016])


def test_polynomial_decay():
    lr = schedule("polynomial")
    assert rate(lr, 500) == pytest.approx(0.16 * 0.5**0.9, rel=1e-5)
    assert rate(lr, 900) == pytest.approx(0.16 * math.pow(0.1, 0.9), rel=1e-5)
    # Then 0 (the official formula, a power of a negative number past the end, gives NaN).
    assert rate(lr, 1000) == 0.0 and rate(lr, 2000) == 0.0
