"""The training loop: learning, replica equivalence, non-finite losses, resumption, multi-worker."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf import get_config, load_weights, build_model
from efficientdet_tf.data.synthetic import SyntheticShapes
from efficientdet_tf.training.trainer import NonFiniteLossError, Trainer, TrainSettings

REPO = Path(__file__).resolve().parents[1]
# Small and without random augmentation, so that runs can be compared exactly.
TINY = ("image_size=64,num_classes=3,fpn_cell_repeats=1,box_class_repeats=1,"
        "input_rand_hflip=false,jitter_min=1.0,jitter_max=1.0")
TRAIN_DATA = "synthetic:train:64"


def make_trainer(model_dir, strategy=None, overrides="", **settings):
    keras.backend.clear_session()
    tf.keras.utils.set_random_seed(1)
    config = get_config("efficientdet-d0", TINY + ("," + overrides if overrides else ""))
    defaults = dict(model_dir=str(model_dir), global_batch_size=8, steps_per_epoch=4,
                    num_epochs=1)
    return Trainer(config, TrainSettings(**{**defaults, **settings}), strategy)


def test_the_model_fits_a_small_set_of_images(tmp_path):
    trainer = make_trainer(tmp_path, overrides="learning_rate=0.64", steps_per_epoch=10,
                           num_epochs=3, steps_per_execution=5)
    history = trainer.fit("synthetic:train:8", seed=0, verbose=False)
    assert trainer.step == 30
    assert history[-1]["det_loss"] < 0.5 * history[0]["det_loss"]


def test_two_replicas_update_like_one_device(tmp_path):
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(cpus) == 2, "conftest.py configures two logical CPU devices"
    results, initial_weights = [], None
    for name, strategy in [("one", None), ("two", tf.distribute.MirroredStrategy(cpus))]:
        trainer = make_trainer(tmp_path / name, strategy, overrides="learning_rate=0.64")
        trainer.restore_or_initialize()
        if initial_weights is None:
            initial_weights = {v.path: v.numpy() for v in trainer.model.weights}
        else:  # start both runs from the same weights, whatever the initializers drew
            for variable in trainer.model.weights:
                variable.assign(initial_weights[variable.path])
            trainer.ema.reset()
        # 8 images and a global batch of 8: both runs see the same images, in whatever order.
        iterator = iter(trainer.distributed_dataset("synthetic:train:8", seed=0))
        parts, _ = trainer._train_steps(iterator, tf.constant(1))
        weights = {v.path: v.numpy() for v in trainer.model.weights}
        averages = {k: v.numpy() for k, v in trainer.ema.values_by_path().items()}
        results.append((float(parts["loss"]), weights, averages))
    (loss_one, weights_one, ema_one), (loss_two, weights_two, ema_two) = results
    assert loss_two == pytest.approx(loss_one, rel=1e-4)
    for path, value in weights_one.items():
        np.testing.assert_allclose(weights_two[path], value, rtol=1e-3, atol=1e-5, err_msg=path)
    for path, value in ema_one.items():
        np.testing.assert_allclose(ema_two[path], value, rtol=1e-3, atol=1e-5, err_msg=path)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, steps_per_epoch=6, save_checkpoints_steps=2)
    real_loss = trainer.loss

    def loss_turning_nan_at_step_4(*args):
        parts = real_loss(*args)
        poison = tf.where(trainer.optimizer.iterations >= 3, np.nan, 0.0)
        return {**parts, "det_loss": parts["det_loss"] + poison}

    trainer.loss = loss_turning_nan_at_step_4
    with pytest.raises(NonFiniteLossError, match=r"at step 4 .*lower learning_rate.*checking the dataset's boxes"):
        trainer.fit(TRAIN_DATA, seed=0, verbose=False)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
    model = build_model(trainer.config)
    load_weights(model, tmp_path)
    assert all(np.isfinite(v.numpy()).all() for v in model.weights)


def _train_command(model_dir, *extra):
    return [sys.executable, "main.py", "--mode=train", f"--model_dir={model_dir}",
            f"--train_file_pattern={TRAIN_DATA}", "--batch_size=4", f"--hparams={TINY}",
            "--tf_random_seed=1", *extra]


def test_tfrecords_are_counted_and_a_run_infers_without_optimizer_warnings(tmp_path):
    """No --num_examples_per_epoch: the records are counted. Loading the run's checkpoint for
    inference leaves out the optimizer's slots without warning about them."""
    SyntheticShapes.split("train", (64, 64), 8).write(tmp_path / "records", num_shards=2)
    command = _train_command(tmp_path / "run", "--num_epochs=1")
    command[command.index(f"--train_file_pattern={TRAIN_DATA}")] = (
        f"--train_file_pattern={tmp_path}/records-*")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Counted 8 training examples in {tmp_path}/records-*" in result.stdout
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-2")  # 8 // 4 steps

    result = subprocess.run(
        [sys.executable, "main.py", "--mode=infer", f"--ckpt={tmp_path / 'run'}",
         f"--model_name={tmp_path / 'run' / 'config.yaml'}", "--input_image=synthetic:val:1",
         f"--output_image_dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "optimizer" not in result.stderr and "WARNING" not in result.stderr, result.stderr


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    command = _train_command(tmp_path, "--num_epochs=4", "--save_checkpoints_steps=2")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (tmp_path / "ckpt-6.index").exists():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    latest = tf.train.latest_checkpoint(str(tmp_path))
    saved_step = int(latest.rsplit("-", 1)[1])
    assert saved_step >= 6
    reader = tf.train.load_checkpoint(latest)  # complete and readable
    saved_ema = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                 if k.startswith("ema/shadows/")}

    trainer = make_trainer(tmp_path, steps_per_epoch=16, num_epochs=4)
    assert trainer.restore_or_initialize() == saved_step
    assert int(trainer.ema.num_updates) == saved_step
    saved_weights = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                     if k.startswith("model/by_path/")}
    assert len(saved_weights) == len(trainer.model.weights)  # every weight, not a few
    for variable in trainer.model.weights:
        key = f"model/by_path/{variable.path.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE"
        np.testing.assert_array_equal(variable.numpy(), saved_weights[key])
    assert len(trainer.ema.shadows) == len(saved_ema)
    for key, value in saved_ema.items():
        path = key[len("ema/shadows/"):].split("/.ATTRIBUTES")[0].replace(".S", "/")
        np.testing.assert_array_equal(trainer.ema.shadows[path].numpy(), value)

    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from {latest} at step {saved_step}" in result.stderr
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-64")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_on_localhost(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    processes, logs = [], [tmp_path / f"worker{index}.log" for index in range(2)]
    for index, log in enumerate(logs):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        command = _train_command(tmp_path / "run", "--strategy=multi-worker",
                                 "--num_epochs=1", "--num_examples_per_epoch=16")
        # Files, not pipes: a worker blocked on a full pipe would stall the collectives.
        with open(log, "w") as output:
            processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=output,
                                              stderr=subprocess.STDOUT))
    for process, log in zip(processes, logs):
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-4")
    assert "Saved checkpoint" in logs[1].read_text()  # the other worker saved elsewhere
    assert not list((tmp_path / "run").glob("edet_worker_*"))
