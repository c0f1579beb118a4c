"""Training curves from a run's TensorBoard logs: the scalars read back as written, curves.png
from `--mode=plot`, and the error for a directory without logs."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from cli_in_process import run_cli
from PIL import Image

from efficientdet_tf.diagnostics.training_curves import plot_training_curves, read_scalars

LOSSES = {1: 2.5, 2: 1.75, 3: 1.25, 4: 1.0}


def write_run(model_dir):
    """A run's logs as training and validation write them; a resumed run rewrites step 4."""
    for part, scalars in (
        ("train", [(step, {"loss": loss, "cls_loss": loss / 2, "learning_rate": 0.01 * step})
                   for step, loss in {**LOSSES, 4: 9.0}.items()]),
        ("train", [(4, {"loss": LOSSES[4]})]),
        ("eval", [(2, {"AP": 0.25, "AP_/cat": 0.5}), (4, {"AP": 0.5, "AP_/cat": 0.75})]),
    ):
        writer = tf.summary.create_file_writer(str(model_dir / part))
        with writer.as_default():
            for step, values in scalars:
                for name, value in values.items():
                    tf.summary.scalar(name, value, step=step)
        writer.close()


def test_scalars_are_read_back_by_step_the_last_write_kept(tmp_path):
    write_run(tmp_path)
    train = read_scalars(tmp_path / "train")
    steps, losses = train["loss"]
    np.testing.assert_array_equal(steps, [1, 2, 3, 4])
    np.testing.assert_allclose(losses, list(LOSSES.values()))
    np.testing.assert_allclose(train["learning_rate"][1], [0.01, 0.02, 0.03, 0.04])
    evals = read_scalars(tmp_path / "eval")
    assert evals["AP"][0].tolist() == [2, 4] and evals["AP_/cat"][1].tolist() == [0.5, 0.75]


def test_the_last_write_of_a_step_wins_whatever_the_event_files_are_named(tmp_path):
    """TensorFlow names event files <seconds>.<host>.<pid>.<writer number>: a process's tenth
    writer sorts before its ninth, and a resumed run's name holds another pid. The newest event
    file (the resumed run's, the smaller) is renamed here to sort first."""
    write_run(tmp_path)
    newest = min((tmp_path / "train").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_size)
    newest.rename(tmp_path / "train" / "events.out.tfevents.0000000000.host.1.0.v2")
    steps, losses = read_scalars(tmp_path / "train")["loss"]
    assert steps.tolist() == [1, 2, 3, 4] and losses[-1] == LOSSES[4]


# Another process (another pid in the file names) opens writers, each writing step 4, until the
# file just written does not sort last by name (the writers' numbers cross 9 to 10, or 99 to
# 100, within a second), and prints the value it wrote last.
MANY_WRITERS = """
import pathlib, sys, tensorflow as tf
directory = pathlib.Path(sys.argv[1])
for value in range(1000):
    before = set(directory.glob("events.out.tfevents.*"))
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        tf.summary.scalar("loss", float(value), step=4)
    writer.close()
    (new,) = set(directory.glob("events.out.tfevents.*")) - before
    if before and new < max(before):
        break
print(value)
"""


def test_the_last_write_of_a_step_wins_across_processes_and_many_writers(tmp_path):
    write_run(tmp_path)  # this process: step 4 written twice, the last write LOSSES[4]
    run = subprocess.run([sys.executable, "-c", MANY_WRITERS, str(tmp_path / "train")],
                         check=True, capture_output=True, text=True, timeout=300)
    last_value = float(run.stdout.split()[-1])
    assert last_value >= 1, "a later writer's file sorts before an earlier one's"
    steps, losses = read_scalars(tmp_path / "train")["loss"]
    assert steps.tolist() == [1, 2, 3, 4] and losses[-1] == last_value


def test_plot_mode_writes_the_curves(tmp_path, capsys):
    write_run(tmp_path)
    assert run_cli("--mode=plot", f"--model_dir={tmp_path}") == 0
    assert f"written to {tmp_path / 'curves.png'}" in capsys.readouterr().out
    assert Image.open(tmp_path / "curves.png").size == (1200, 800)


def test_a_directory_without_logs_is_refused_by_name(tmp_path, capsys):
    assert run_cli("--mode=plot", f"--model_dir={tmp_path}") == 2
    assert "No TensorBoard scalars" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="--model_dir of a training run"):
        plot_training_curves(tmp_path)
