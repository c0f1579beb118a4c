"""Training through `ObjectDetector.fit` (the command line's path too): learning, clipping, replica
equivalence, starting from a checkpoint, non-finite losses, resumption, multi-worker."""

import json
import logging
import os
import shutil
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
from cli_in_process import run_cli
from official_fixture import FIXTURE_DIR, requires_fixture
from training_harness import (
    TWO_HEADS,
    Snapshots,
    fit,
    make_detector,
    start_of_fit,
    training_config,
)
from training_interruptions import InterruptAtStep, Interruption, make_loss_turn_nan_at_step_4

from efficientdet_tf import (
    CheckpointMismatchError,
    ObjectDetector,
    build_model,
    get_config,
    load_weights,
    save_weights,
)
from efficientdet_tf.backends import Replicas
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.model.checkpoint import EMA_SUFFIX, checkpoint_name
from efficientdet_tf.training.callbacks import (
    RUN_CONFIG_FILE_NAME,
    ImageSummaries,
    NonFiniteLossError,
    TrainingCheckpoints,
    input_image_summary,
)
from efficientdet_tf.training.step import make_optimizer

REPO = Path(__file__).resolve().parents[1]
TRAIN_DATA = "synthetic:train:64"
# The tiny detector with the five-block backbone: every test here but the official fixture's
# and the float16 clipping (no step) trains it; B0's 16 blocks are not the point of any.
CONFIG = training_config(five_blocks=True)


def tiny_detector(overrides="", strategy=None, run_eagerly=False):
    """`run_eagerly`: for tests of a few steps' arithmetic or bookkeeping, which then start at
    once instead of tracing for seconds. The traced step runs in the learning and replica tests,
    and in every run of the command line."""
    return make_detector(CONFIG.override(overrides or None), strategy, run_eagerly)


def test_the_model_fits_a_small_set_of_images_with_both_heads():
    detector = tiny_detector("learning_rate=0.64," + TWO_HEADS)
    detector.compile(steps_per_execution=5)
    history = fit(detector, "synthetic:train:8", steps_per_epoch=10, epochs=3)
    assert int(detector.optimizer.iterations.numpy()) == 30
    for loss in ("det_loss", "seg_loss"):
        assert history.history[loss][-1] < 0.7 * history.history[loss][0], (loss, history.history)


@pytest.mark.slow
def test_two_traced_replicas_update_like_the_eager_step_on_one_device():
    """Both heads: each loss is normalized over the global batch (positive anchors, labelled
    pixels), so that the replicas' shares add up to the one-device loss; and the gradients are
    clipped (at 0.1, so every tensor is) by the norms of their sum over the replicas. The traced
    step of two replicas is compared with the eager step on one device (which the short tests
    here use): a difference between tracing and eager execution fails it too."""
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(cpus) == 2, "conftest.py configures two logical CPU devices"
    runs = {"one device": (None, True),
            "two replicas": (tf.distribute.MirroredStrategy(cpus), False)}
    results, initial = {}, None
    for name, (strategy, run_eagerly) in runs.items():
        detector = tiny_detector("lr_warmup_init=0.64,clip_gradients_norm=0.1," + TWO_HEADS,
                                 strategy, run_eagerly)
        if initial is None:
            initial = {v.path: v.numpy() for v in detector.network.weights}
        else:  # start every run from the same weights, whatever the initializers drew
            for variable in detector.network.weights:
                variable.assign(initial[variable.path])
        snapshots = Snapshots()
        # 8 images and a global batch of 8: every run sees the same images, in whatever order.
        fit(detector, "synthetic:train:8", steps_per_epoch=1, callbacks=[snapshots])
        results[name] = snapshots.after_steps[0]
    weights_one, averages_one, _, logs_one = results.pop("one device")
    for name, (weights, averages, _, logs) in results.items():
        for loss in ("loss", "det_loss", "seg_loss"):
            assert logs[loss] == pytest.approx(logs_one[loss], rel=1e-4), (name, loss)
        for path, value in weights_one.items():  # the updates (lr 0.64 from the first step)
            np.testing.assert_allclose(weights[path] - initial[path], value - initial[path],
                                       rtol=1e-2, atol=1e-6, err_msg=f"{name}: {path}")
        for path, value in averages_one.items():
            np.testing.assert_allclose(averages[path], value, rtol=1e-3, atol=1e-5,
                                       err_msg=f"{name}: {path}")


# A loss whose gradient is known: norm 1000 on one tensor, 3 and 4 on two others, 0 elsewhere.
# Clipping at 10, each tensor first: 10, 3, 4; then the global norm sqrt(125) > 10 scales all by
# 10 / sqrt(125). (Global clipping alone would leave the small ones at 0.03 and 0.04.)
GRADIENT_NORMS = {"class_net/class-predict/bias": 1000.0, "box_net/box-predict/bias": 3.0,
                  "class_net/class-0/bias": 4.0}
CLIPPED_NORMS = {path: min(norm, 10.0) * 10.0 / np.sqrt(125.0)
                 for path, norm in GRADIENT_NORMS.items()}


def use_linear_loss(detector, global_batch_size=8):
    """Replaces the loss by one with gradient GRADIENT_NORMS (each tensor along all-ones).

    Every replica's share is its part of the global batch, so the sum over replicas is the whole.
    The detection loss times 0 keeps every variable in the graph, with a zero gradient.
    """
    real_loss = detector.training_step.loss
    variables = {v.path: v for v in detector.training_step.trainable}

    def linear_loss(class_outputs, box_outputs, labels, num_positives):
        parts = real_loss(class_outputs, box_outputs, labels, num_positives)
        share = tf.cast(tf.shape(class_outputs[0])[0] / global_batch_size, tf.float32)
        linear = tf.add_n([norm / np.sqrt(variables[path].shape.num_elements())
                           * tf.reduce_sum(variables[path])
                           for path, norm in GRADIENT_NORMS.items()])
        return {**parts, "det_loss": 0.0 * parts["det_loss"] + share * linear}

    detector.training_step.loss = linear_loss


def test_gradients_are_clipped_per_tensor_then_globally():
    """(On the cross-replica sum: `test_two_replicas_update_like_one_device`.)"""
    detector = tiny_detector("weight_decay=0,clip_gradients_norm=10", run_eagerly=True)
    use_linear_loss(detector)
    snapshots = Snapshots()
    fit(detector, "synthetic:train:8", steps_per_epoch=1, callbacks=[snapshots])
    before, after = snapshots.at_start.weights, snapshots.after_steps[0].weights
    for variable in detector.training_step.trainable:
        # The first SGD step with momentum moves the weights by -learning_rate * gradient.
        step = (before[variable.path] - after[variable.path]) / snapshots.first_learning_rate
        size = variable.shape.num_elements()
        expected = CLIPPED_NORMS.get(variable.path, 0.0) / np.sqrt(size)
        np.testing.assert_allclose(step, np.full(variable.shape, expected), rtol=1e-4,
                                   atol=1e-6, err_msg=variable.path)


def test_float16_gradients_are_clipped_by_their_unscaled_norms():
    keras.backend.clear_session()
    detector = ObjectDetector(CONFIG)
    optimizer = make_optimizer(detector.config, 8, 4, 1, dtype_policy="mixed_float16")
    optimizer.build(detector.training_step.trainable)
    # float16 training scales the loss, so the gradients, by 2**15 until the optimizer unscales.
    scale = float(optimizer.dynamic_scale)
    assert scale == 2.0**15
    trainable = detector.training_step.trainable
    gradients = [tf.fill(v.shape, np.float32(scale * GRADIENT_NORMS.get(v.path, 0.0)
                                             / np.sqrt(v.shape.num_elements())))
                 for v in trainable]
    clipped = detector.training_step.clip_gradients(gradients, Replicas(), optimizer)
    for variable, gradient in zip(trainable, clipped):
        np.testing.assert_allclose(np.linalg.norm(gradient.numpy()) / scale,
                                   CLIPPED_NORMS.get(variable.path, 0.0), rtol=1e-5,
                                   err_msg=variable.path)


@requires_fixture
def test_training_from_the_official_fixture_starts_from_its_plain_values():
    keras.backend.clear_session()
    # The fixture's variables, small input.
    detector = ObjectDetector.from_pretrained(
        "efficientdet-d0", hparams="image_size=64", checkpoint=FIXTURE_DIR / "ckpt")
    reader = tf.train.load_checkpoint(str(FIXTURE_DIR / "ckpt"))
    weights, averages, num_updates, _ = start_of_fit(detector, batch_size=2, steps_per_epoch=1)
    for variable in detector.network.weights:
        plain = reader.get_tensor(checkpoint_name(variable))
        np.testing.assert_array_equal(weights[variable.path], plain, err_msg=variable.path)
    trainable = detector.network.trainable_variables
    assert len(averages) == len(trainable)
    differ = 0
    for variable in trainable:
        shadow = reader.get_tensor(checkpoint_name(variable) + EMA_SUFFIX)
        np.testing.assert_array_equal(averages[variable.path], shadow, err_msg=variable.path)
        differ += not np.array_equal(shadow, weights[variable.path])
    assert differ == len(trainable)  # so the test tells them apart
    assert num_updates == 0


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """The directory of a run of 2 epochs of 3 steps, saving every 2 steps, interrupted after
    step 4 (ckpt-4, mid-epoch); tests that write into it copy it first."""
    directory = tmp_path_factory.mktemp("interrupted_run")
    with pytest.raises(Interruption):
        fit(tiny_detector(run_eagerly=True), epochs=2, steps_per_epoch=3,
            callbacks=[TrainingCheckpoints(directory, save_checkpoints_steps=2),
                       InterruptAtStep(4)])
    return directory


def _checkpoint_to_start_from(tmp_path, start, request):
    """The checkpoint to start from, with averages that differ from its plain values, and both
    {variable path: value}."""
    if start == "training run":
        run = request.getfixturevalue("interrupted_run")
        reader = tf.train.load_checkpoint(str(run))
        detector = tiny_detector()
        plain = {v.path: reader.get_tensor(_saved_key("model/by_path", v.path))
                 for v in detector.network.weights}
        averages = {v.path: reader.get_tensor(_saved_key("ema/shadows", v.path))
                    for v in detector.network.trainable_variables}
        return str(run), plain, averages
    keras.backend.clear_session()
    model = build_model(CONFIG.override("num_classes=5"))
    plain = {v.path: v.numpy() + 0.5 for v in model.weights}
    averages = {path: value + 0.5 for path, value in plain.items()}
    for variable in model.weights:
        variable.assign(plain[variable.path])
    prefix = str(save_weights(model, tmp_path / "official" / "ckpt", ema_values={
        checkpoint_name(v): averages[v.path] for v in model.weights}))
    return prefix, plain, averages


def _saved_key(prefix, path):
    """The key of a variable in a training checkpoint."""
    return f"{prefix}/{path.replace('/', '.S')}/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.mark.xdist_group("interrupted_run")
@pytest.mark.parametrize("start", ["official layout", "backbone", "training run"])
def test_a_start_from_a_checkpoint_trains_its_plain_values_and_seeds_the_average(
    tmp_path, start, request
):
    checkpoint, plain, averages = _checkpoint_to_start_from(tmp_path, start, request)
    detector = tiny_detector()
    initial = {v.path: v.numpy() for v in detector.network.weights}
    detector.load_pretrained(checkpoint,
                             only_scope="efficientnet-b0" if start == "backbone" else None)
    weights, shadows, num_updates, _ = start_of_fit(detector)
    for path, value in weights.items():
        if start == "backbone":
            loaded = path.startswith("efficientnet-b0/")
        else:  # the 5-class head of the official-layout checkpoint does not fit: skipped
            loaded = initial[path].shape == plain[path].shape
        np.testing.assert_array_equal(value, plain[path] if loaded else initial[path],
                                      err_msg=path)
        if path in shadows:
            np.testing.assert_array_equal(shadows[path],
                                          averages[path] if loaded else initial[path],
                                          err_msg=path)
    assert num_updates == 0


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    detector = tiny_detector(run_eagerly=True)
    make_loss_turn_nan_at_step_4(detector)
    with pytest.raises(NonFiniteLossError,
                       match=r"at step 4 .*lower learning_rate.*checking the dataset's boxes"):
        fit(detector, steps_per_epoch=6, callbacks=[TrainingCheckpoints(tmp_path, 2)])
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")
    model = build_model(detector.config)
    load_weights(model, tmp_path)
    assert all(np.isfinite(v.numpy()).all() for v in model.weights)


@pytest.mark.xdist_group("interrupted_run")
def test_a_run_resumed_mid_epoch_restores_its_state_and_finishes_on_the_epoch_count(
    interrupted_run, tmp_path
):
    run = Path(shutil.copytree(interrupted_run, tmp_path / "run"))
    saved = tf.train.load_checkpoint(str(run / "ckpt-4"))
    detector = tiny_detector(run_eagerly=True)
    # A run that resumes ignores the checkpoint to start from (here one that does not exist), as
    # the command line's --pretrained_ckpt on a model_dir with checkpoints.
    detector.start_training_from(tmp_path / "no such checkpoint")
    snapshots = Snapshots()
    history = fit(detector, epochs=2, steps_per_epoch=3,
                  callbacks=[TrainingCheckpoints(run), snapshots])
    weights, averages, num_updates, _ = snapshots.at_start
    assert num_updates == 4
    for path, value in weights.items():
        np.testing.assert_array_equal(value, saved.get_tensor(_saved_key("model/by_path", path)))
    for path, value in averages.items():
        np.testing.assert_array_equal(value, saved.get_tensor(_saved_key("ema/shadows", path)))
    # Step 4 is the first of epoch 2 (3 steps each): its last 2 steps, then the run ends.
    assert len(snapshots.after_steps) == 2 and int(detector.optimizer.iterations.numpy()) == 6
    assert history.epoch == [1]
    assert tf.train.latest_checkpoint(str(run)).endswith("ckpt-6")


@pytest.mark.xdist_group("interrupted_run")
def test_a_run_of_another_config_is_refused_in_one_line_and_keeps_its_config_yaml(
    interrupted_run, tmp_path
):
    run = Path(shutil.copytree(interrupted_run, tmp_path / "run"))
    run_config = (run / RUN_CONFIG_FILE_NAME).read_text()
    detector = tiny_detector(f"box_class_repeats={CONFIG.box_class_repeats + 1}",
                             run_eagerly=True)
    with pytest.raises(CheckpointMismatchError) as error:
        fit(detector, steps_per_epoch=1, callbacks=[TrainingCheckpoints(run)])
    message = str(error.value)
    assert "differs from its config.yaml in box_class_repeats)" in message, message
    assert f"--model_name={run / RUN_CONFIG_FILE_NAME}" in message
    assert "\n" not in message and "value=" not in message and len(message) < 600, message
    assert (run / RUN_CONFIG_FILE_NAME).read_text() == run_config


def _train_args(tmp_path, model_dir, *extra):
    """`efficientdet --mode=train` of CONFIG (saved as tmp_path/tiny.yaml) on batches of 4."""
    config_file = tmp_path / "tiny.yaml"
    if not config_file.exists():
        CONFIG.save(config_file)
    return ["--mode=train", f"--model_dir={model_dir}", f"--model_name={config_file}",
            f"--train_file_pattern={TRAIN_DATA}", "--batch_size=4", "--tf_random_seed=1", *extra]


def _main_py(*args):
    return [sys.executable, "main.py", *args]


@pytest.mark.slow  # a command-line run that traces its step, then infers from its checkpoint
def test_tfrecords_are_counted_and_a_run_infers_without_optimizer_warnings(
    tmp_path, capfd, caplog
):
    """No --num_examples_per_epoch: the records are counted. Loading the run's checkpoint for
    inference leaves out the optimizer's slots without warning about them (in the test's
    process: capfd reads its stderr, logging's handlers included, and caplog its records)."""
    SyntheticShapes.split("train", (64, 64), 8).write(tmp_path / "records", num_shards=2)
    args = _train_args(tmp_path, tmp_path / "run", "--num_epochs=1")
    args[args.index(f"--train_file_pattern={TRAIN_DATA}")] = (
        f"--train_file_pattern={tmp_path}/records-*")
    status = run_cli(*args)
    out, err = capfd.readouterr()
    assert status == 0, err[-3000:]
    assert f"Counted 8 training examples in {tmp_path}/records-*" in out
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-2")  # 8 // 4 steps
    assert f"Training curves written to {tmp_path / 'run' / 'curves.png'}" in out

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        status = run_cli("--mode=infer", f"--ckpt={tmp_path / 'run'}",
                         f"--model_name={tmp_path / 'run' / 'config.yaml'}",
                         "--input_image=synthetic:val:1", f"--output_image_dir={tmp_path / 'out'}")
    out, err = capfd.readouterr()
    assert status == 0, err[-3000:]
    assert "optimizer" not in err and "WARNING" not in err, err
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING], (
        caplog.text)
    assert list((tmp_path / "out").iterdir())


def _latest_step(model_dir) -> int:
    latest = tf.train.latest_checkpoint(str(model_dir))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, capfd, caplog):
    """The run is killed (SIGKILL, its own process) once it has saved step 4 of 16; the run
    started again (here in the test's process) resumes from its last complete checkpoint."""
    model_dir = tmp_path / "run"
    args = _train_args(tmp_path, model_dir, "--num_epochs=2", "--num_examples_per_epoch=32",
                       "--save_checkpoints_steps=2")  # 16 steps
    process = subprocess.Popen(_main_py(*args), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while _latest_step(model_dir) < 4:
            assert process.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    latest = tf.train.latest_checkpoint(str(model_dir))
    saved_step = _latest_step(model_dir)
    assert 4 <= saved_step < 16, "killed mid-run"
    reader = tf.train.load_checkpoint(latest)  # complete and readable
    saved_ema = [k for k in reader.get_variable_to_shape_map() if k.startswith("ema/shadows/")]
    assert int(reader.get_tensor("ema/num_updates/.ATTRIBUTES/VARIABLE_VALUE")) == saved_step
    assert len(saved_ema) == len(build_model(CONFIG).trainable_weights)

    with caplog.at_level(logging.INFO, logger="efficientdet_tf"):
        status = run_cli(*args)
    assert status == 0, capfd.readouterr().err[-3000:]
    assert f"Resumed from {latest} at step {saved_step}" in caplog.text
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-16")
    final = tf.train.load_checkpoint(str(model_dir / "ckpt-16"))
    assert int(final.get_tensor("ema/num_updates/.ATTRIBUTES/VARIABLE_VALUE")) == 16  # continued


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_workers_train_on_localhost(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    processes, logs = [], [tmp_path / f"worker{index}.log" for index in range(2)]
    command = _main_py(*_train_args(tmp_path, tmp_path / "run", "--strategy=multi-worker",
                                    "--num_epochs=1", "--num_examples_per_epoch=16"))
    for index, log in enumerate(logs):
        env = {**os.environ, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        # Files, not pipes: a worker blocked on a full pipe would stall the collectives.
        with open(log, "w") as output:
            processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=output,
                                              stderr=subprocess.STDOUT))
    for process, log in zip(processes, logs):
        assert process.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert tf.train.latest_checkpoint(str(tmp_path / "run")).endswith("ckpt-4")
    assert "Saved checkpoint" in logs[1].read_text()  # the other worker saved elsewhere
    assert not list((tmp_path / "run").glob("edet_worker_*"))


def _image_events(log_dir) -> dict[str, list[tuple[int, int, int]]]:
    """{tag: [(step, height, width) of each image]} in the event files of `log_dir`."""
    events = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                images = tf.make_ndarray(value.tensor)[2:]  # width, height, then the PNGs
                for encoded in images:
                    shape = tf.io.decode_png(encoded).shape
                    events.setdefault(value.tag, []).append((event.step, *shape[:2]))
    return events


@pytest.mark.slow
def test_img_summary_steps_writes_input_batches_and_the_drawn_sample_image(tmp_path):
    """official train_lib: input images in model_dir/train_images; DisplayCallback: the sample
    image's detections in model_dir/test_images, every img_summary_steps steps (the eager step;
    test_input_image_summary_in_a_traced_step traces the summary)."""
    sample = tmp_path / "sample.png"
    keras.utils.save_img(sample, np.random.default_rng(0).integers(0, 255, (48, 80, 3)))
    detector = tiny_detector(f"img_summary_steps=2,sample_image={sample}", run_eagerly=True)
    fit(detector, "synthetic:train:4", batch_size=4, steps_per_epoch=3,
        callbacks=[ImageSummaries(tmp_path / "run", detector.config)])
    inputs = _image_events(tmp_path / "run" / "train_images")
    assert inputs == {"input_image": [(step, 64, 64) for step in (0, 0, 0, 2, 2, 2)]}
    assert _image_events(tmp_path / "run" / "test_images") == {"Test image": [(2, 48, 80)]}


def test_input_image_summary_in_a_traced_step(tmp_path):
    config = get_config("efficientdet-d0", "image_size=32,img_summary_steps=3")
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        step = tf.function(lambda images, step: input_image_summary(images, config, step))
        for index in range(7):
            step(tf.zeros([4, 32, 32, 3]), tf.constant(index, tf.int64))
    writer.flush()
    assert _image_events(tmp_path) == {
        "input_image": [(step, 32, 32) for step in (0, 0, 0, 3, 3, 3, 6, 6, 6)]}
