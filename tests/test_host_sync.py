"""The step the training callbacks act at, counted without a host sync per step
(`training.callbacks.StepCountingCallback`): on JAX no callback copies the state back into the
variables at a batch end unless it saves; under float16 the checkpoints still come at the
optimizer's steps when loss scaling skips one."""

from pathlib import Path

import keras
import pytest
import tensorflow as tf
from backends import BACKEND
from training_harness import (  # noqa: F401 (a fixture)
    TWO_HEADS,
    dtype_policy,
    fit,
    make_detector,
    training_config,
)

from efficientdet_tf.object_detector import ObjectDetector
from efficientdet_tf.training.callbacks import ImageSummaries, StepSummaries, TrainingCheckpoints

# On JAX, the five-block detector with both heads on batches of 4, as
# tests/test_training_off_tensorflow.py trains it: its compiled step comes from the shared
# compilation cache (conftest.py). On TensorFlow, its eager step with one head.
JAX_CONFIG = training_config(TWO_HEADS, five_blocks=True)
CONFIG = training_config(five_blocks=True)


def project_callbacks(model_dir: Path, save_checkpoints_steps: int) -> list:
    """The callbacks of --mode=train, ImageSummaries without a sample image included."""
    return [TrainingCheckpoints(model_dir, save_checkpoints_steps),
            StepSummaries(model_dir / "train"),
            ImageSummaries(model_dir, CONFIG.override("img_summary_steps=1"))]


class SyncsPerStep(keras.callbacks.Callback):
    """The calls of `detector.jax_state_sync` from each batch's begin to its end, the step and
    the callbacks before this one (the project's: `fit` puts them first) included. It reads
    nothing from the model, which would sync."""

    def __init__(self, detector):
        super().__init__()
        self.calls = 0
        self.per_step = []
        sync = detector.jax_state_sync

        def counted_sync():
            self.calls += 1
            sync()

        detector.jax_state_sync = counted_sync

    def on_train_batch_begin(self, batch, logs=None):
        self._calls_before = self.calls

    def on_train_batch_end(self, batch, logs=None):
        self.per_step.append(self.calls - self._calls_before)


@pytest.mark.slow  # compiles JAX's training step (100 s on 2 cores with an empty cache)
@pytest.mark.any_backend
@pytest.mark.skipif(BACKEND != "jax", reason="only JAX's fit keeps the training state outside "
                                             "the variables (Callback.model syncs it back)")
def test_on_jax_the_callbacks_sync_the_state_only_to_save(tmp_path):
    detector = make_detector(JAX_CONFIG)
    syncs = SyncsPerStep(detector)
    fit(detector, "synthetic:train:8", epochs=2, batch_size=4,
        callbacks=[*project_callbacks(tmp_path, save_checkpoints_steps=3), syncs])
    steps_with_syncs = [step for step, calls in enumerate(syncs.per_step, 1) if calls]
    assert steps_with_syncs == [3, 6]  # the saves of save_checkpoints_steps
    assert checkpoint_steps(tmp_path) == [3, 4, 6, 8]  # and those of the epoch ends
    assert scalar_steps(tmp_path / "train", "loss") == list(range(1, 9))


@pytest.mark.slow  # two eager fits of the bookkeeping: 16 s, the ten minutes are full
def test_with_steps_per_execution_the_count_goes_by_each_executions_last_batch(tmp_path):
    detector = make_detector(CONFIG, run_eagerly=True)  # the counts are the point
    detector.compile(run_eagerly=True, steps_per_execution=2)  # Keras: one batch end per 2 steps
    fit(detector, "synthetic:train:4", epochs=2, batch_size=2, steps_per_epoch=2,
        callbacks=project_callbacks(tmp_path, save_checkpoints_steps=3))
    assert checkpoint_steps(tmp_path) == [2, 4]  # the first epoch's end, the first past 3
    assert scalar_steps(tmp_path / "train", "loss") == [2, 4]


@pytest.mark.slow  # a float16 fit with a forced overflow: 24 s
def test_under_float16_a_skipped_step_delays_the_checkpoint_not_the_step_scalars(
        tmp_path, dtype_policy):  # noqa: F811
    """Step 2 overflows (loss scale 1e30) and is skipped: the count of batches runs one ahead
    of the optimizer's step until the next epoch starts, the step's scalars written at it; a
    checkpoint comes at the first batch end where the optimizer's own step reaches a multiple
    of save_checkpoints_steps."""
    keras.backend.clear_session()  # before the policy: clearing the session resets it
    dtype_policy("mixed_float16")
    keras.utils.set_random_seed(1)
    detector = ObjectDetector(CONFIG)
    detector.compile(run_eagerly=True)  # the counts are the point, not the traced step
    scales = LossScales([1.0, 1e30, 1.0, 1.0], tmp_path)
    fit(detector, "synthetic:train:4", epochs=2, batch_size=2, steps_per_epoch=2,
        callbacks=[*project_callbacks(tmp_path, save_checkpoints_steps=2), scales])
    assert scales.optimizer_steps == [1, 1, 2, 3]
    # Not at the count's 2 (the first epoch's end saves step 1), at the optimizer's 2.
    assert scales.checkpoints_after == [[], [], [1, 2], [1, 2]]
    assert checkpoint_steps(tmp_path) == [1, 2, 3]
    assert scalar_steps(tmp_path / "train", "loss") == [1, 2, 2, 3]


class LossScales(keras.callbacks.Callback):
    """Sets the loss scale of each step; records the optimizer's step and the checkpoints of
    `model_dir` after each (it comes after TrainingCheckpoints, which `fit` puts first)."""

    def __init__(self, scales, model_dir):
        super().__init__()
        self.scales, self.model_dir = scales, model_dir
        self.optimizer_steps, self.checkpoints_after = [], []

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.dynamic_scale.assign(self.scales[len(self.optimizer_steps)])

    def on_train_batch_end(self, batch, logs=None):
        self.optimizer_steps.append(int(self.model.optimizer.iterations.numpy()))
        self.checkpoints_after.append(checkpoint_steps(self.model_dir))


def checkpoint_steps(model_dir: Path) -> list[int]:
    state = tf.train.get_checkpoint_state(str(model_dir))
    paths = state.all_model_checkpoint_paths if state else []
    return [int(path.rsplit("-", 1)[1]) for path in paths]


def scalar_steps(log_dir: Path, tag: str) -> list[int]:
    """The steps of `tag`'s scalars in the event files of `log_dir`, in writing order."""
    steps = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps += [event.step for value in event.summary.value if value.tag == tag]
    return steps
