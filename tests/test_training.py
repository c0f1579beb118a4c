"""The training loop: learning, clipping, replica equivalence, starting from a checkpoint,
non-finite losses, resumption, multi-worker."""

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

from efficientdet_tf import build_model, get_config, load_weights, save_weights
from efficientdet_tf.data.synthetic import SyntheticShapes
from efficientdet_tf.model.checkpoint import EMA_SUFFIX, checkpoint_name
from efficientdet_tf.training.trainer import NonFiniteLossError, Trainer, TrainSettings
from official_fixture import FIXTURE_DIR, requires_fixture

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


# A loss whose gradient is known: norm 1000 on one tensor, 3 and 4 on two others, 0 elsewhere.
# Clipping at 10, each tensor first: 10, 3, 4; then the global norm sqrt(125) > 10 scales all by
# 10 / sqrt(125). (Global clipping alone would leave the small ones at 0.03 and 0.04.)
GRADIENT_NORMS = {"class_net/class-predict/bias": 1000.0, "box_net/box-predict/bias": 3.0,
                  "class_net/class-0/bias": 4.0}
CLIPPED_NORMS = {path: min(norm, 10.0) * 10.0 / np.sqrt(125.0)
                 for path, norm in GRADIENT_NORMS.items()}


def use_linear_loss(trainer):
    """Replaces the loss by one with gradient GRADIENT_NORMS (each tensor along all-ones).

    Every replica's share is its part of the global batch, so the sum over replicas is the whole.
    The detection loss times 0 keeps every variable in the graph, with a zero gradient.
    """
    real_loss, variables = trainer.loss, {v.path: v for v in trainer.trainable}

    def linear_loss(class_outputs, box_outputs, labels, num_positives):
        parts = real_loss(class_outputs, box_outputs, labels, num_positives)
        share = tf.cast(tf.shape(class_outputs[0])[0] / trainer.settings.global_batch_size,
                        tf.float32)
        linear = tf.add_n([norm / np.sqrt(variables[path].shape.num_elements())
                           * tf.reduce_sum(variables[path]) for path, norm in GRADIENT_NORMS.items()])
        return {**parts, "det_loss": 0.0 * parts["det_loss"] + share * linear}

    trainer.loss = linear_loss


@pytest.mark.parametrize("replicas", [1, 2])
def test_gradients_are_clipped_per_tensor_then_globally_on_their_sum(tmp_path, replicas):
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
    strategy = tf.distribute.MirroredStrategy(cpus) if replicas > 1 else None
    trainer = make_trainer(tmp_path, strategy, overrides="weight_decay=0,clip_gradients_norm=10")
    trainer.restore_or_initialize()
    use_linear_loss(trainer)
    before = {v.path: v.numpy() for v in trainer.trainable}
    learning_rate = float(trainer.optimizer.learning_rate)
    trainer._train_steps(iter(trainer.distributed_dataset("synthetic:train:8", seed=0)),
                         tf.constant(1))
    for variable in trainer.trainable:
        # The first SGD step with momentum moves the weights by -learning_rate * gradient.
        step = (before[variable.path] - variable.numpy()) / learning_rate
        size = variable.shape.num_elements()
        expected = CLIPPED_NORMS.get(variable.path, 0.0) / np.sqrt(size)
        np.testing.assert_allclose(step, np.full(variable.shape, expected), rtol=1e-4,
                                   atol=1e-6, err_msg=variable.path)


def test_float16_gradients_are_clipped_by_their_unscaled_norms(tmp_path):
    keras.backend.clear_session()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        trainer = Trainer(get_config("efficientdet-d0", TINY), TrainSettings(
            model_dir=str(tmp_path), global_batch_size=8, steps_per_epoch=4, num_epochs=1))
    finally:
        keras.config.set_dtype_policy("float32")
    # float16 training scales the loss, so the gradients, by 2**15 until the optimizer unscales.
    scale = float(trainer.optimizer.dynamic_scale)
    assert scale == 2.0**15
    gradients = [tf.fill(v.shape, np.float32(scale * GRADIENT_NORMS.get(v.path, 0.0)
                                             / np.sqrt(v.shape.num_elements())))
                 for v in trainer.trainable]
    clipped = trainer._clip_gradients(gradients, tf.distribute.get_replica_context())
    for variable, gradient in zip(trainer.trainable, clipped):
        np.testing.assert_allclose(np.linalg.norm(gradient.numpy()) / scale,
                                   CLIPPED_NORMS.get(variable.path, 0.0), rtol=1e-5,
                                   err_msg=variable.path)


@requires_fixture
def test_training_from_the_official_fixture_starts_from_its_plain_values(tmp_path):
    keras.backend.clear_session()
    config = get_config("efficientdet-d0", "image_size=64")  # the fixture's variables, small input
    trainer = Trainer(config, TrainSettings(
        model_dir=str(tmp_path), global_batch_size=2, steps_per_epoch=1, num_epochs=1,
        pretrained_ckpt=str(FIXTURE_DIR / "ckpt")))
    assert trainer.restore_or_initialize() == 0
    reader = tf.train.load_checkpoint(str(FIXTURE_DIR / "ckpt"))
    for variable in trainer.model.weights:
        plain = reader.get_tensor(checkpoint_name(variable))
        np.testing.assert_array_equal(variable.numpy(), plain, err_msg=variable.path)
    assert len(trainer.ema.shadows) == len(trainer.model.trainable_variables)
    differ = 0
    for variable in trainer.model.trainable_variables:
        shadow = reader.get_tensor(checkpoint_name(variable) + EMA_SUFFIX)
        np.testing.assert_array_equal(trainer.ema.shadows[variable.path].numpy(), shadow,
                                      err_msg=variable.path)
        differ += not np.array_equal(shadow, variable.numpy())
    assert differ == len(trainer.model.trainable_variables)  # so the test tells them apart
    assert int(trainer.ema.num_updates) == 0


def _checkpoint_to_start_from(tmp_path, start):
    """Settings naming a checkpoint whose averages differ from its plain values, and both
    {variable path: value}."""
    if start == "training run":
        trainer = make_trainer(tmp_path / "earlier_run")
        for variable in trainer.model.weights:
            variable.assign(variable + 0.5)
        for variable in trainer.trainable:
            trainer.ema.shadows[variable.path].assign(variable + 0.5)
        trainer.ema.num_updates.assign(7)
        trainer.save()
        plain = {v.path: v.numpy() for v in trainer.model.weights}
        averages = {path: shadow.numpy() for path, shadow in trainer.ema.shadows.items()}
        return dict(pretrained_ckpt=str(tmp_path / "earlier_run")), plain, averages
    keras.backend.clear_session()
    model = build_model(get_config("efficientdet-d0", TINY.replace("num_classes=3", "num_classes=5")))
    plain = {v.path: v.numpy() + 0.5 for v in model.weights}
    averages = {path: value + 0.5 for path, value in plain.items()}
    for variable in model.weights:
        variable.assign(plain[variable.path])
    prefix = str(save_weights(model, tmp_path / "official" / "ckpt", ema_values={
        checkpoint_name(v): averages[v.path] for v in model.weights}))
    return {"backbone_ckpt" if start == "backbone" else "pretrained_ckpt": prefix}, plain, averages


@pytest.mark.parametrize("start", ["official layout", "backbone", "training run"])
def test_a_start_from_a_checkpoint_trains_its_plain_values_and_seeds_the_average(tmp_path, start):
    settings, plain, averages = _checkpoint_to_start_from(tmp_path, start)
    trainer = make_trainer(tmp_path / "run", **settings)
    initial = {v.path: v.numpy() for v in trainer.model.weights}
    assert trainer.restore_or_initialize() == 0
    for variable in trainer.model.weights:
        path = variable.path
        if start == "backbone":
            loaded = path.startswith("efficientnet-b0/")
        else:  # the 5-class head of the official-layout checkpoint does not fit: skipped
            loaded = initial[path].shape == plain[path].shape
        np.testing.assert_array_equal(variable.numpy(), plain[path] if loaded else initial[path],
                                      err_msg=path)
        if path in trainer.ema.shadows:
            np.testing.assert_array_equal(trainer.ema.shadows[path].numpy(),
                                          averages[path] if loaded else initial[path], err_msg=path)
    assert int(trainer.ema.num_updates) == 0


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
