"""What the training tests share on every Keras backend (tests/test_training.py on TensorFlow,
tests/test_training_off_tensorflow.py on JAX and PyTorch, tests/test_mixed_precision.py): the
tiny training config, a seeded detector, `fit` with short defaults, snapshots of the state around
each step, and a dtype-policy fixture that restores the policy it found."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import keras
import numpy as np
import pytest
from small_models import FIVE_BLOCK_BACKBONE, NO_AUGMENTATION, TINY

from efficientdet_tf.config import get_config
from efficientdet_tf.object_detector import ObjectDetector

# The tiny D0 without augmentation: two runs see the same pixels.
TINY_TRAINING = f"{TINY},{NO_AUGMENTATION}"
# Detection and segmentation (P7 upsampled level by level to 64x64 needs max_level 6).
TWO_HEADS = "heads=object_detection*segmentation,seg_num_classes=4,max_level=6"
FIT_DEFAULTS = dict(epochs=1, batch_size=8, steps_per_epoch=4, seed=0, verbose=0)


def training_config(overrides: str = "", five_blocks: bool = False):
    """TINY_TRAINING with `overrides`; `five_blocks`: `small_models.FIVE_BLOCK_BACKBONE`, for
    the tests that trace, compile or run the step many times, where B0's 16 blocks are not the
    point."""
    config = get_config("efficientdet-d0", ",".join(filter(None, [TINY_TRAINING, overrides])))
    return config.override(FIVE_BLOCK_BACKBONE) if five_blocks else config


def make_detector(config, scope=None, run_eagerly: bool | None = None) -> ObjectDetector:
    """A detector of `config` with seeded initial weights, built under `scope` (a
    tf.distribute strategy or a Keras distribution). `run_eagerly` (compiles): for tests of a
    few steps' arithmetic or bookkeeping, which then start at once instead of tracing."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(1)
    with scope.scope() if scope is not None else contextlib.nullcontext():
        detector = ObjectDetector(config)
    if run_eagerly is not None:
        detector.compile(run_eagerly=run_eagerly)
    return detector


def fit(detector, data="synthetic:train:64", **options):
    """`detector.fit` with FIT_DEFAULTS (one epoch of 4 steps of 8 images, seeded, quiet)."""
    return detector.fit(data, **{**FIT_DEFAULTS, **options})


class State(NamedTuple):
    weights: dict  # {path: weight}
    averages: dict  # {path: averaged weight}
    num_updates: int  # steps of the average
    logs: dict | None = None


def state_of(detector, logs=None) -> State:
    average = detector.weight_average
    return State({v.path: keras.ops.convert_to_numpy(v) for v in detector.network.weights},
                 average.values_by_path(),
                 int(keras.ops.convert_to_numpy(average.num_updates)),
                 None if logs is None else dict(logs))


class Snapshots(keras.callbacks.Callback):
    """The learning rate before the first step, the state when training starts (the first fit
    only: a run resumed mid-epoch fits twice) and after each step, with its logs (before `fit`
    puts the averages into the weights)."""

    def __init__(self):
        super().__init__()
        self.after_steps: list[State] = []

    def on_train_begin(self, logs=None):
        if not hasattr(self, "at_start"):
            self.at_start = state_of(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        if not self.after_steps:
            self.first_learning_rate = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        self.after_steps.append(state_of(self.model, logs))


class StartReached(Exception):
    pass


class StopAtStart(Snapshots):
    """Records the state fit starts from, then stops before the first step."""

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        raise StartReached


def start_of_fit(detector, **options) -> State:
    """The state `fit` starts training from."""
    stop = StopAtStart()
    with pytest.raises(StartReached):
        fit(detector, callbacks=[stop], **options)
    return stop.at_start


@pytest.fixture
def dtype_policy():
    """Sets Keras's global dtype policy (`dtype_policy(name)`), and restores the policy it found
    afterwards. Clear the session before setting it: clearing resets it."""
    previous = keras.config.dtype_policy()
    try:
        yield keras.config.set_dtype_policy
    finally:
        keras.config.set_dtype_policy(previous)


def assert_states_equal(actual: State, expected: State) -> None:
    for path, value in expected.weights.items():
        np.testing.assert_array_equal(actual.weights[path], value, err_msg=path)
    for path, value in expected.averages.items():
        np.testing.assert_array_equal(actual.averages[path], value, err_msg=path)
