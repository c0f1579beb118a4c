"""Training on JAX in several processes (`--strategy=multi-worker` with Keras's environment
variables): what is refused before JAX's runtime starts, and two processes on this machine (JAX's
CPU collectives over loopback) that train like one."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")

import tensorflow as tf  # noqa: E402
from backends import BACKEND  # noqa: E402
from cli_in_process import run_cli  # noqa: E402
from jax_environment import COMPILATION_CACHE  # noqa: E402
from small_models import NO_AUGMENTATION  # noqa: E402
from training_harness import training_config  # noqa: E402

from efficientdet_tf.backends import jax_processes  # noqa: E402
from efficientdet_tf.backends.jax_processes import ProcessGroup  # noqa: E402
from efficientdet_tf.errors import ConfigError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ADDRESSES, COUNT, ID = jax_processes.VARIABLES
# The subprocesses run on one CPU device each, outside any TensorFlow cluster.
_NOT_INHERITED = ("XLA_FLAGS", "TF_CONFIG", *jax_processes.VARIABLES)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(port: int, num_processes: int, process_id: int) -> dict[str, str]:
    return {ADDRESSES: f"127.0.0.1:{port}", COUNT: str(num_processes), ID: str(process_id)}


@pytest.mark.parametrize("variables, message", [
    ({}, f"and {ADDRESSES}, {COUNT}, {ID} are not set: set all three in every process"),
    ({ADDRESSES: "10.0.0.1:1234", COUNT: "2"}, f"and {ID} is not set"),
    (_environment(1234, 2, 2), f"{ID}=2 is not one of the 2 processes of {COUNT}: number them 0 "
                               "to 1"),
    ({**_environment(1234, 3, 0), ADDRESSES: "a:1,b:2"},
     f"{ADDRESSES} lists 2 addresses and {COUNT} is 3"),
    ({**_environment(1234, 2, 0), ADDRESSES: "10.0.0.1"}, "must be host:port"),
    ({**_environment(1234, 2, 0), COUNT: "two"}, f"{COUNT}='two' is not an integer"),
])
def test_a_wrong_process_variable_is_named_with_the_fix(variables, message):
    with pytest.raises(ConfigError, match=message):
        ProcessGroup.from_environment(variables)


def test_a_process_that_reaches_no_coordinator_stops_after_the_timeout():
    group = ProcessGroup.from_environment(_environment(_free_port(), 2, 1))
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"Process 1 reached no coordinator at 127.0.0.1:\d+ in "
                                          rf"1 s \(.*\): start process 0 there, and check "
                                          rf"{ADDRESSES}"):
        jax_processes.join(group, timeout_s=1)
    assert time.monotonic() - start < 5


def test_a_coordinator_whose_port_is_taken_is_refused():
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        group = ProcessGroup.from_environment(_environment(port, 2, 0))
        with pytest.raises(ConfigError, match=f"The coordinator's port {port} .* cannot be used "
                                              "here: .*Choose a free port"):
            jax_processes.join(group, timeout_s=1)


@pytest.mark.slow  # a new process importing TensorFlow, Keras and JAX
def test_tpu_strategy_on_jax_off_a_tpu_vm_is_refused_in_one_line():
    """In a new process, as the command line joins before JAX starts."""
    joined = subprocess.run(
        [sys.executable, "-c", "from efficientdet_tf.backends import jax_processes\n"
                               "jax_processes.join_tpu_hosts(5)"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert joined.returncode == 1
    assert joined.stderr.strip().splitlines()[-1].startswith(
        "efficientdet_tf.errors.ConfigError: --strategy=tpu on JAX found no TPU VM to join (")


@pytest.mark.any_backend
@pytest.mark.skipif(BACKEND != "jax", reason="TensorFlow's multi-worker reads TF_CONFIG")
def test_the_command_line_names_the_variables_of_a_multi_process_run(tmp_path, capsys,
                                                                      monkeypatch):
    for name in jax_processes.VARIABLES:
        monkeypatch.delenv(name, raising=False)
    status = run_cli("--mode=train", "--strategy=multi-worker", "--train_file_pattern=synthetic",
                     f"--model_dir={tmp_path}")
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1, error
    assert f"{ADDRESSES}, {COUNT}, {ID} are not set" in error[0]


@pytest.mark.any_backend
@pytest.mark.skipif(BACKEND != "jax", reason="the JAX backend's data for several processes")
def test_each_process_reads_its_own_shard_which_keras_leaves_as_it_is(monkeypatch):
    """As process 0 and 1 of two, the backend builds each its half of the global batch of 4 from
    its own shard of the data (4 images)."""
    import keras

    from efficientdet_tf import backends
    from efficientdet_tf.backends import jax as jax_backend
    from efficientdet_tf.data.pipeline import build_dataset

    config = training_config(NO_AUGMENTATION)

    def first_batch(distribution, processes: int, index: int) -> np.ndarray:
        monkeypatch.setattr(jax_backend.jax, "process_count", lambda: processes)
        monkeypatch.setattr(jax_backend.jax, "process_index", lambda: index)
        dataset = backends.current().distributed_dataset(
            distribution, lambda batch, context: build_dataset(
                "synthetic:train:4", config, is_training=True, batch_size=batch,
                input_context=context, seed=0), 4)
        return next(iter(dataset))[0].numpy()

    distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    halves = [first_batch(distribution, 2, index) for index in (0, 1)]
    assert not distribution.auto_shard_dataset  # Keras does not split the halves again
    assert [len(half) for half in halves] == [2, 2]
    # Four different images: all of the data's four, none read by both processes.
    assert len({float(image.sum()) for half in halves for image in half}) == 4


# --- two processes on this machine -------------------------------------------------------------

# A learning rate that does not depend on the run's length, so that a run resumed for one more
# epoch runs the same XLA program, found in JAX's compilation cache.
_SAME_PROGRAM = "lr_decay_method=stepwise"


def _train_command(model_dir: Path, config_file: Path, *extra: str, mode="train") -> list[str]:
    """One epoch is one step of the same 4 images (no augmentation), so that one process and
    two processes (2 images each, their own shard) train on the same global batch."""
    return [sys.executable, "main.py", f"--mode={mode}", f"--model_dir={model_dir}",
            f"--model_name={config_file}", f"--hparams={NO_AUGMENTATION},{_SAME_PROGRAM}",
            "--train_file_pattern=synthetic:train:4", "--batch_size=4", "--tf_random_seed=1",
            "--process_join_timeout=120", *extra]


def _run_processes(tmp_path, name: str, command: list[str], environments: list[dict],
                   wait: bool = True) -> list:
    """Starts `command` once per environment (KERAS_BACKEND=jax, one CPU device each); returns
    the processes, or waits for them and returns their logs."""
    base = {key: value for key, value in os.environ.items() if key not in _NOT_INHERITED}
    processes, logs = [], [tmp_path / f"{name}.{index}.log" for index in range(len(environments))]
    for environment, log in zip(environments, logs):
        with open(log, "w") as output:  # files, not pipes: a full pipe would stall a process
            processes.append(subprocess.Popen(
                command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT,
                env={**base, "KERAS_BACKEND": "jax", **COMPILATION_CACHE, **environment}))
    if not wait:
        return processes
    for process, log in zip(processes, logs):
        assert process.wait(timeout=900) == 0, log.read_text()[-3000:]
    return [log.read_text() for log in logs]


def _two_processes(port: int) -> list[dict]:
    return [_environment(port, 2, process_id) for process_id in (0, 1)]


def _network_tensors(checkpoint: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(checkpoint))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if key.startswith("model/")}


def _second_update(model_dir: Path) -> dict[str, np.ndarray]:
    first, second = _network_tensors(model_dir / "ckpt-1"), _network_tensors(model_dir / "ckpt-2")
    return {key: second[key] - first[key] for key in first}


def _relative_difference(update: dict, reference: dict) -> float:
    difference = np.sqrt(sum(np.sum((update[k] - reference[k]) ** 2) for k in reference))
    return float(difference / np.sqrt(sum(np.sum(reference[k] ** 2) for k in reference)))


@pytest.mark.slow  # three runs in two processes and one in one, each starting TensorFlow and JAX
def test_two_processes_train_like_one_write_once_and_resume_together(tmp_path):
    config_file = tmp_path / "tiny.yaml"
    training_config(five_blocks=True).save(config_file)
    run, single = tmp_path / "run", tmp_path / "single"
    multi_worker = ["--strategy=multi-worker", "--num_epochs=2"]
    logs = _run_processes(tmp_path, "two", _train_command(run, config_file, *multi_worker),
                          _two_processes(_free_port()))
    _run_processes(tmp_path, "one", _train_command(single, config_file, "--num_epochs=2"), [{}])

    assert _relative_difference(_second_update(run), _second_update(single)) <= 1e-4
    for key, value in _network_tensors(single / "ckpt-2").items():
        np.testing.assert_allclose(_network_tensors(run / "ckpt-2")[key], value, rtol=1e-4,
                                   atol=1e-6, err_msg=key)
    # Process 0 writes the run; process 1 saves into a scratch folder it removes.
    assert f"Saved checkpoint {run / 'ckpt-2'}" in logs[0]
    assert f"Saved checkpoint {run}" not in logs[1] and "Saved checkpoint" in logs[1]
    assert len(list((run / "train").glob("events.out.tfevents.*"))) == 1

    resumed = _run_processes(tmp_path, "resumed", _train_command(
        run, config_file, "--strategy=multi-worker", "--num_epochs=3",
        "--val_file_pattern=synthetic:val:2", mode="train_and_eval"), _two_processes(_free_port()))
    for log in resumed:
        assert f"Resumed from {run / 'ckpt-2'} at step 2" in log
        assert "val_AP" in log  # both validate
    assert tf.train.latest_checkpoint(str(run)).endswith("ckpt-3")
    assert len(list((run / "eval").glob("events.out.tfevents.*"))) == 1


@pytest.mark.slow  # two processes starting TensorFlow and JAX
def test_a_process_counting_other_processes_than_the_coordinator_stops_naming_the_variable(
        tmp_path):
    port = _free_port()
    config_file = tmp_path / "tiny.yaml"
    training_config(five_blocks=True).save(config_file)
    command = _train_command(tmp_path / "run", config_file, "--strategy=multi-worker")
    coordinator, other = _run_processes(
        tmp_path, "mismatch", command, [_environment(port, 2, 0), _environment(port, 3, 1)],
        wait=False)
    try:
        assert other.wait(timeout=300) == 2
    finally:
        coordinator.kill()  # it waits for a peer that has gone, until JAX's heartbeat ends it
    error = (tmp_path / "mismatch.1.log").read_text().strip().splitlines()[-1]
    assert error.endswith(f"error: {COUNT}=3 here, but the coordinator at 127.0.0.1:{port} "
                          "counts 2 processes: set the same number in every process.")
    assert not (tmp_path / "run" / "checkpoint").exists()
