"""Learning-rate schedules of the official recipe."""

import math

import pytest

from efficientdet_tf import get_config
from efficientdet_tf.training.learning_rate import WarmupSchedule


def schedule(method, batch=128, steps_per_epoch=100):
    config = get_config("efficientdet-d0", f"lr_decay_method={method},num_epochs=10,"
                        "lr_warmup_epoch=1.0,first_lr_drop_epoch=5.0,second_lr_drop_epoch=8.0")
    return WarmupSchedule(config, batch, steps_per_epoch)


def rate(lr, step):
    return float(lr(step))


def test_warmup_is_linear_to_the_batch_scaled_rate():
    lr = schedule("cosine")
    assert rate(lr, 0) == pytest.approx(0.008)
    assert rate(lr, 50) == pytest.approx(0.008 + 0.5 * (0.16 - 0.008))
    assert rate(lr, 100) == pytest.approx(0.16)  # 0.08 per 64 images, batch 128


def test_cosine_decays_to_zero_at_the_end():
    lr = schedule("cosine")
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
