"""Training on JAX and PyTorch (`KERAS_BACKEND=jax python -m pytest -m any_backend`, and the
same with `torch`): the update of TensorFlow's step, several devices (JAX), and what `fit` and
the command line do around the step. TensorFlow's training is tests/test_training.py."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import training_harness
from backends import BACKEND
from cli_in_process import run_cli
from official_fixture import requires_fixture
from training_harness import (
    TWO_HEADS,
    Snapshots,
    assert_states_equal,
    make_detector,
    training_config,
)
from training_interruptions import InterruptAtStep, Interruption, make_loss_turn_nan_at_step_4
from training_update import (
    COCO128,
    FULL_SIZE,
    SMALL_SIZE,
    relative_difference,
    training_update,
)

from efficientdet_tf.config import ConfigError
from efficientdet_tf.model.builder import build_model
from efficientdet_tf.model.checkpoint import load_weights
from efficientdet_tf.training.callbacks import NonFiniteLossError, TrainingCheckpoints

pytestmark = [
    pytest.mark.any_backend,
    pytest.mark.skipif(BACKEND == "tensorflow",
                       reason="training on TensorFlow: tests/test_training.py"),
]
jax_only = pytest.mark.skipif(BACKEND != "jax", reason="Keras distributes training on JAX only")

TESTS = Path(__file__).resolve().parent
# Both heads, as tests/test_training.py's replica test. Every test trains this model on batches
# of 4, so that on JAX the XLA programs compiled once come from JAX's compilation cache
# afterwards (conftest.py sets one).
CONFIG = training_config(TWO_HEADS, five_blocks=True)


def tiny_detector(overrides=None, distribution=None):
    return make_detector(CONFIG.override(overrides), distribution)


def fit(detector, data="synthetic:train:8", **options):
    """Two epochs of 4 steps, as every test here trains (one compiled program; see CONFIG)."""
    return training_harness.fit(detector, data, **{"epochs": 2, "batch_size": 4, **options})


@pytest.mark.slow  # D0, and a TensorFlow process in float64 for the reference (512 px: minutes)
@requires_fixture
@pytest.mark.skipif(not COCO128.is_dir(), reason=f"needs the shared coco128 at {COCO128}")
@pytest.mark.parametrize(("image_size", "bound"), [(SMALL_SIZE, 5e-4), (FULL_SIZE, 1e-3)],
                         ids=[f"{SMALL_SIZE}px", f"{FULL_SIZE}px"])
def test_one_step_from_the_official_checkpoint_updates_the_weights_as_on_tensorflow(
        tmp_path, image_size, bound):
    """The update of TensorFlow's step (the official one) computed in float64, the recipe's
    arithmetic without float32 rounding (training_update.py says why not in float32): measured
    1.6e-4 at 64 px and 1.7e-4 at 512 px on JAX."""
    reference_file = tmp_path / "tensorflow_update.npz"
    tensorflow = subprocess.Popen(
        [sys.executable, str(TESTS / "training_update.py"), str(reference_file), str(image_size),
         "--float64"],
        env={**os.environ, "KERAS_BACKEND": "tensorflow"}, stderr=subprocess.PIPE, text=True)
    update = training_update(image_size)
    _, errors = tensorflow.communicate(timeout=1800)
    assert tensorflow.returncode == 0, errors[-3000:]
    with np.load(reference_file) as reference:
        assert relative_difference(update, dict(reference)) <= bound


@pytest.mark.slow  # two programs compiled, one per device layout
@jax_only
def test_two_devices_update_like_one():
    """DataParallel over two host devices (conftest.py asks XLA for them): the batch is split,
    and the update is that of one device with the same global batch."""
    devices = keras.distribution.list_devices()
    assert len(devices) == 2, "conftest.py sets XLA_FLAGS for two host devices"
    runs = {"one device": None, "two devices": keras.distribution.DataParallel(devices=devices)}
    results = {}
    for name, distribution in runs.items():
        detector = tiny_detector(distribution=distribution)
        snapshots = Snapshots()
        fit(detector, callbacks=[snapshots])
        results[name] = snapshots
    one, two = results["one device"], results["two devices"]
    for path, start in one.at_start.weights.items():
        np.testing.assert_array_equal(two.at_start.weights[path], start, err_msg=path)
    assert len(one.after_steps) == len(two.after_steps) == 8
    for after_one, after_two in zip(one.after_steps, two.after_steps):
        for path, value in after_one.weights.items():
            np.testing.assert_allclose(after_two.weights[path], value, rtol=1e-4, atol=1e-6,
                                       err_msg=path)
        for path, value in after_one.averages.items():
            np.testing.assert_allclose(after_two.averages[path], value, rtol=1e-4, atol=1e-6,
                                       err_msg=path)


@pytest.mark.slow  # 30 steps and a validation, compiled with XLA
def test_fit_learns_and_validates():
    detector = tiny_detector("learning_rate=0.64")
    history = fit(detector, steps_per_epoch=10, epochs=3, validation_data="synthetic:val:4",
                  validation_freq=3)  # another learning rate and length: compiled again
    assert int(keras.ops.convert_to_numpy(detector.optimizer.iterations)) == 30
    for loss in ("det_loss", "seg_loss"):
        assert history.history[loss][-1] < 0.7 * history.history[loss][0], (loss, history.history)
    assert {"cls_loss", "box_loss", "reg_l2_loss", "loss", "learning_rate"} <= set(history.history)
    assert len(history.history["val_AP"]) == 1 and len(history.history["val_mIoU"]) == 1


@pytest.mark.slow  # two runs, each compiling its step
def test_a_run_killed_mid_epoch_resumes_where_it_was_saved(tmp_path):
    model_dir = tmp_path / "run"
    detector, snapshots = tiny_detector(), Snapshots()
    with pytest.raises(Interruption):
        fit(detector, callbacks=[TrainingCheckpoints(model_dir, save_checkpoints_steps=1),
                                 snapshots, InterruptAtStep(3)])
    saved = snapshots.after_steps[2]

    resumed, resumed_snapshots = tiny_detector(), Snapshots()
    history = fit(resumed, callbacks=[TrainingCheckpoints(model_dir), resumed_snapshots])
    assert_states_equal(resumed_snapshots.at_start, saved)
    assert history.epoch == [0, 1]  # the rest of the first epoch, then the second
    assert len(resumed_snapshots.after_steps) == 5
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 8
    assert int(keras.ops.convert_to_numpy(resumed.weight_average.num_updates)) == 8


@pytest.mark.slow  # another compiled step (its loss turns NaN)
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    detector = tiny_detector()
    make_loss_turn_nan_at_step_4(detector)
    with pytest.raises(NonFiniteLossError, match=r"at step 4 .*lower learning_rate"):
        fit(detector, callbacks=[TrainingCheckpoints(tmp_path, save_checkpoints_steps=2)])
    assert (tmp_path / "checkpoint").read_text().startswith('model_checkpoint_path: "ckpt-2"')
    model = build_model(detector.config)
    load_weights(model, tmp_path)
    assert all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in model.weights)


@pytest.mark.slow  # a command-line run that compiles its training and evaluation
def test_the_command_line_trains_and_evaluates(tmp_path, capsys):
    model_dir = tmp_path / "run"
    CONFIG.save(tmp_path / "config.yaml")
    status = run_cli("--mode=train_and_eval", f"--model_name={tmp_path / 'config.yaml'}",
                     "--train_file_pattern=synthetic:train:16",
                     "--val_file_pattern=synthetic:val:4", "--num_epochs=2", "--batch_size=4",
                     f"--model_dir={model_dir}")
    assert status == 0, capsys.readouterr().err
    assert (model_dir / "checkpoint").is_file()
    assert (model_dir / "curves.png").is_file()
    assert run_cli("--mode=train", "--strategy=multi-worker", "--train_file_pattern=synthetic",
                   f"--model_dir={tmp_path / 'other'}") == 2
    error = capsys.readouterr().err.strip().splitlines()
    refusal = {"jax": "KERAS_DISTRIBUTION_PROCESS_ID are not set: set all three in every process",
               "torch": "--strategy=multi-worker: Keras distributes no training on PyTorch"}
    assert len(error) == 1 and refusal[BACKEND] in error[0]


def test_grad_checkpoint_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="trains on TensorFlow only.*grad_checkpoint=false"):
        fit(tiny_detector("grad_checkpoint=true"))
