"""The command line on hardware that is not there, and the TensorFlow C++ lines it hides."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from cli_in_process import run_cli
from small_models import TINY

from efficientdet_tf import backends

REPO = Path(__file__).resolve().parents[1]
# A line of TensorFlow's C++ logging: severity, date, time, thread, file.cc:line]
NATIVE_LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:. ]+\d+ \w+\.(cc|h):\d+\]", re.MULTILINE)
# Starts TensorFlow as the command line does, then runs what logged C++ lines after start-up:
# tf.data's generator dataset (generator_dataset_op.cc, dataset.cc) and grappler (devices.cc).
AFTER_START_UP = """
import efficientdet_tf.cli.main
import tensorflow as tf
from tensorflow.python.grappler import tf_optimizer
from tensorflow.core.protobuf import config_pb2

def numbers():
    yield 1
list(tf.data.Dataset.from_generator(numbers, output_signature=tf.TensorSpec([], tf.int32)))
graph = tf.function(lambda x: x * 2).get_concrete_function(tf.TensorSpec([1])).graph
meta = tf.compat.v1.train.export_meta_graph(graph_def=graph.as_graph_def(), graph=graph)
meta.collection_def["train_op"].node_list.value.append(graph.outputs[0].op.name)
tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta)
"""


def _stderr_after_start_up(**env) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", AFTER_START_UP], cwd=REPO,
                            env={**environment, "PYTHONPATH": str(REPO), **env},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


@pytest.mark.slow  # two new processes, each importing TensorFlow
@pytest.mark.parametrize("level, shown", [(None, False), ("0", True)])
def test_the_command_line_hides_tensorflows_cpp_lines_after_start_up(level, shown):
    """The test session sets TF_CPP_MIN_LOG_LEVEL (conftest); a user's shell does not."""
    stderr = _stderr_after_start_up(**({"TF_CPP_MIN_LOG_LEVEL": level} if level else {}))
    assert bool(NATIVE_LOG_LINE.search(stderr)) == shown, stderr
    if shown:
        assert "generator_dataset_op.cc" in stderr and "devices.cc" in stderr


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is here")
def test_gpus_strategy_without_a_gpu_warns_naming_the_devices(caplog):
    with caplog.at_level(logging.WARNING, "efficientdet_tf.backends.tensorflow"):
        strategy = backends.current().make_distribution("gpus")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("--strategy=gpus, but TensorFlow finds no GPU (devices: ")
    assert "/physical_device:CPU:0" in warnings[0]
    assert f"training runs on {strategy.extended.worker_devices[0]}" in warnings[0]


def test_tpu_strategy_without_a_tpu_is_a_one_line_usage_error(tmp_path, capsys):
    status = run_cli("--mode=train", "--strategy=tpu", "--model_name=efficientdet-d0",
                     f"--hparams={TINY}", f"--model_dir={tmp_path}",
                     "--train_file_pattern=synthetic:train:2")
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1, error
    assert "--strategy=tpu found no TPU (no --tpu given: Please provide a TPU Name" in error
    assert "Cloud TPU VM with --tpu=local" in error
