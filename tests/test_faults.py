"""Faults met while running, not in the user's settings: a write that fails (a full disk, a file
size limit), a damaged checkpoint at resume or load, an output folder that cannot be one. Each
ends in one message that names the path and the cause; nothing that was complete is lost."""

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_in_process import run_cli
from training_harness import fit, make_detector, training_config

from efficientdet_tf.errors import ConfigError
from efficientdet_tf.model.checkpoint import DamagedCheckpointError, checkpoint_damage
from efficientdet_tf.output_files import (
    WriteFailedError,
    partial_path,
    written_whole,
)
from efficientdet_tf.training.callbacks import TrainingCheckpoints

CONFIG = training_config(five_blocks=True)
CHECKPOINT_BYTES = 3_500_000  # a checkpoint of CONFIG's training state (3.4 MB)


@contextlib.contextmanager
def file_size_limit(limit_bytes: int):
    """While in the block, a write past `limit_bytes` in any file fails with EFBIG ('File too
    large'): a write fault on any file system, injected in this process (SIGXFSZ ignored, so that
    the write fails instead of the process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size_bytes: int, read_only: bool = False):
    """A tmpfs of `size_bytes` at `path`; the test is skipped, with the reason, where this
    process may not mount one (the file size limit injects a write fault everywhere)."""
    path.mkdir(parents=True)
    options = f"size={size_bytes}" + (",ro" if read_only else "")
    mount = shutil.which("mount")
    result = (subprocess.run([mount, "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True) if mount else None)
    if result is None or result.returncode:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): "
                    + (result.stderr.strip() if result else "no mount command"))
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


class LimitFileSizeAfterStep(keras.callbacks.Callback):
    """Enters `limit` (a `file_size_limit`) at the end of optimizer step `step`; placed after
    the checkpoint callback, that step's save is done first. The test leaves the limit."""

    def __init__(self, step: int, limit):
        super().__init__()
        self.step, self.limit = step, limit

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)) == self.step:
            self.limit.__enter__()


def _fit(model_dir, steps: int, callbacks=()):
    """A seeded detector trained (resuming from model_dir's checkpoints) up to optimizer step
    `steps`, saving a checkpoint after every step; the detector."""
    detector = make_detector(CONFIG, run_eagerly=True)
    fit(detector, steps_per_epoch=steps, batch_size=1,
        callbacks=[TrainingCheckpoints(model_dir, save_checkpoints_steps=1), *callbacks])
    return detector


@pytest.mark.parametrize("fault", ["file_size_limit", "full_tmpfs"])
def test_a_failed_checkpoint_save_keeps_the_last_good_one_and_leaves_no_partial_files(
    fault, tmp_path
):
    """The save of step 2 fails (the tmpfs holds one checkpoint; or files are limited to 100 kB
    from step 1 on): one error naming the path, the cause and the last good checkpoint, which
    the state file still names, and nothing of ckpt-2 left."""
    with contextlib.ExitStack() as stack:
        if fault == "full_tmpfs":
            model_dir = stack.enter_context(mounted_tmpfs(tmp_path / "disk", 5_000_000)) / "run"
            faults, cause = [], "No space left on device"
        else:
            model_dir = tmp_path / "run"
            limit = file_size_limit(100_000)
            stack.callback(limit.__exit__, None, None, None)
            faults, cause = [LimitFileSizeAfterStep(1, limit)], "File too large"
        with pytest.raises(WriteFailedError) as raised:
            _fit(model_dir, steps=2, callbacks=faults)
        assert str(raised.value) == (
            f"Checkpoint {model_dir}/ckpt-2 could not be written: {cause}. The last good "
            f"checkpoint, {model_dir}/ckpt-1, stays the one 'checkpoint' names: free some space "
            "and run again to resume from it.")
        assert not [name for name in os.listdir(model_dir) if name.startswith("ckpt-2")]
        assert tf.train.latest_checkpoint(str(model_dir)) == f"{model_dir}/ckpt-1"
        assert checkpoint_damage(f"{model_dir}/ckpt-1") is None


def error_lines(err: str) -> list[str]:
    """The command line's error lines in `err`, without the program name."""
    return [line.split(" error: ", 1)[1] for line in err.splitlines() if " error: " in line]


@pytest.mark.slow  # a command-line training run: it traces its step
def test_the_command_line_answers_a_failed_write_with_one_line(tmp_path, capfd):
    """A training run whose first checkpoint cannot be written (a file size limit below its
    size, above config.yaml's): exit status 1, one line, no traceback."""
    config_file = tmp_path / "tiny.yaml"
    CONFIG.save(config_file)
    with file_size_limit(CHECKPOINT_BYTES // 10):
        status = run_cli("--mode=train", f"--model_dir={tmp_path / 'run'}",
                         f"--model_name={config_file}", "--train_file_pattern=synthetic:train:8",
                         "--batch_size=4", "--num_epochs=1")
    err = capfd.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert error_lines(err) == [f"Checkpoint {tmp_path}/run/ckpt-2 could not be written: File "
                                "too large. No checkpoint of this run was complete yet."]


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> Path:
    """A run of two steps, checkpoints ckpt-1 and ckpt-2: copy it before changing it."""
    run = tmp_path_factory.mktemp("two_checkpoints") / "run"
    _fit(run, steps=2)
    return run


class LatestCheckpointAtStart(keras.callbacks.Callback):
    def __init__(self, model_dir):
        super().__init__()
        self.model_dir = str(model_dir)

    def on_train_begin(self, logs=None):
        self.latest = tf.train.latest_checkpoint(self.model_dir)


def _copy(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run, to))


def _truncate(prefix: str) -> bytes:
    """Truncates the data file of checkpoint `prefix` to half, as an interrupted copy leaves
    it; the bytes left."""
    data_file = f"{prefix}.data-00000-of-00001"
    os.truncate(data_file, os.path.getsize(data_file) // 2)
    return Path(data_file).read_bytes()


@pytest.mark.xdist_group("two_checkpoints")  # their run is trained once
def test_a_run_whose_latest_checkpoint_is_damaged_resumes_from_the_one_before(
    two_checkpoints, tmp_path, caplog
):
    """ckpt-2 truncated: the run warns, sets it aside in damaged/ (bytes untouched), resumes from
    ckpt-1 and ends with the weights of a run resumed from ckpt-1 by hand."""
    run = _copy(two_checkpoints, tmp_path / "run")
    by_hand = _copy(two_checkpoints, tmp_path / "by_hand")
    for path in by_hand.glob("ckpt-2.*"):
        path.unlink()
    (by_hand / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n'
                                        'all_model_checkpoint_paths: "ckpt-1"\n')
    damaged_bytes = _truncate(f"{run}/ckpt-2")

    at_start = LatestCheckpointAtStart(run)
    resumed = _fit(run, steps=2, callbacks=[at_start])
    expected = _fit(by_hand, steps=2)

    for mine, theirs in zip(resumed.network.weights, expected.network.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine),
                                      keras.ops.convert_to_numpy(theirs), err_msg=mine.path)
    assert at_start.latest == f"{run}/ckpt-1"  # what `--ckpt=<run>` reads before a new save
    [aside] = (run / "damaged").iterdir()
    assert (aside / "ckpt-2.data-00000-of-00001").read_bytes() == damaged_bytes
    assert re.search(rf"Damaged checkpoints skipped and moved to {aside}: {run}/ckpt-2 \(Read "
                     r"less bytes than requested\)\. Resuming from the one before\.",
                     caplog.text)
    state = tf.train.get_checkpoint_state(str(run))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-1", "ckpt-2"]
    assert checkpoint_damage(f"{run}/ckpt-2") is None  # a new one, the damaged one aside


@pytest.mark.xdist_group("two_checkpoints")  # their run is trained once
def test_a_run_whose_checkpoints_are_all_damaged_stops_and_names_them(two_checkpoints, tmp_path):
    run = _copy(two_checkpoints, tmp_path / "run")
    _truncate(f"{run}/ckpt-1")
    _truncate(f"{run}/ckpt-2")
    before = sorted(os.listdir(run))
    with pytest.raises(DamagedCheckpointError, match=re.escape(
            f"Every checkpoint in {run} is damaged: {run}/ckpt-2 (Read less bytes than "
            f"requested); {run}/ckpt-1 (Read less bytes than requested). Nothing to resume "
            f"from: move them out of {run} (or use another model_dir) to start fresh.")):
        _fit(run, steps=3)
    assert sorted(os.listdir(run)) == before


@pytest.fixture(scope="module")
def damaged_checkpoint(two_checkpoints, tmp_path_factory) -> Path:
    """A run whose latest checkpoint, ckpt-2, is truncated."""
    run = _copy(two_checkpoints, tmp_path_factory.mktemp("damaged") / "run")
    _truncate(f"{run}/ckpt-2")
    return run


@pytest.mark.xdist_group("two_checkpoints")  # their run is trained once
@pytest.mark.parametrize("mode_flags", [
    ["--mode=infer", "--input_image=synthetic:val:1", "--output_image_dir={tmp}/out"],
    ["--mode=eval", "--val_file_pattern=synthetic:val:2"],
    ["--mode=export", "--saved_model_dir={tmp}/export"],
], ids=lambda flags: flags[0])
def test_a_damaged_ckpt_is_named_in_one_line(mode_flags, damaged_checkpoint, tmp_path, capfd):
    config_file = tmp_path / "tiny.yaml"
    CONFIG.save(config_file)
    status = run_cli(*(flag.format(tmp=tmp_path) for flag in mode_flags),
                     f"--ckpt={damaged_checkpoint}", f"--model_name={config_file}")
    err = capfd.readouterr().err
    assert status == 1 and "Traceback" not in err
    assert error_lines(err) == [
        f"Checkpoint {damaged_checkpoint}/ckpt-2 is damaged (Read less "
        "bytes than requested): its files are truncated or corrupted. Copy it again, or give an "
        "earlier checkpoint of the run (<model_dir>/ckpt-<step>)."]


# The output folder flag of each mode, with the mode's other required flags.
OUTPUT_FOLDERS = {
    "--model_dir": ["--mode=train", "--train_file_pattern=nowhere/*"],
    "--saved_model_dir": ["--mode=export"],
    "--output_image_dir": ["--mode=infer", "--input_image=synthetic:val:1"],
    "--report_dir": ["--mode=eval", "--val_file_pattern=synthetic:val:1"],
}


@pytest.mark.parametrize("flag", OUTPUT_FOLDERS)
def test_a_folder_under_a_file_is_refused_before_any_work(flag, tmp_path, capfd):
    """Refused before the checkpoint is read (it does not exist) or the data (neither)."""
    (tmp_path / "a_file").write_text("")
    status = run_cli(*OUTPUT_FOLDERS[flag], f"{flag}={tmp_path}/a_file/out",
                     f"--ckpt={tmp_path}/no_checkpoint")
    assert status == 2
    assert error_lines(capfd.readouterr().err) == [
        f"{flag}={tmp_path}/a_file/out cannot be a folder: {tmp_path}/a_file is a file. Choose "
        "a path that is, or can become, a folder."]


def test_a_folder_on_a_read_only_file_system_is_refused(tmp_path):
    with mounted_tmpfs(tmp_path / "ro", 1_000_000, read_only=True) as read_only:
        with pytest.raises(ConfigError, match=re.escape(
                f"model_dir={read_only}/run cannot be written: {read_only}: Read-only file "
                "system. Choose a folder on a writable file system.")):
            TrainingCheckpoints(read_only / "run")


def test_a_failed_write_keeps_the_file_before_it_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("complete")
    with pytest.raises(WriteFailedError, match=re.escape(
            f"Results {path} could not be written: File too large.")):
        with file_size_limit(1000), written_whole(path, "Results") as partial:
            Path(partial).write_bytes(b"x" * 5000)
    assert path.read_text() == "complete"
    assert os.listdir(tmp_path) == ["results.json"]
    with written_whole(path, "Results") as partial:
        assert partial == partial_path(path) == f"{tmp_path}/.results.partial.json"
        Path(partial).write_text("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["results.json"]


def test_a_folder_written_whole_replaces_its_entries_and_keeps_the_others(tmp_path):
    """As a SavedModel written into the folder that holds the TFLite files: saved_model.pb
    replaced, variables/ replaced whole (no stale shard left), float32.tflite kept."""
    folder = tmp_path / "export"
    (folder / "variables").mkdir(parents=True)
    (folder / "variables" / "variables.data-00001-of-00002").write_text("stale shard")
    (folder / "saved_model.pb").write_text("old")
    (folder / "float32.tflite").write_text("tflite")
    with written_whole(folder, "SavedModel") as partial:
        (Path(partial) / "variables").mkdir(parents=True)
        (Path(partial) / "variables" / "variables.data-00000-of-00001").write_text("new shard")
        (Path(partial) / "saved_model.pb").write_text("new")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "float32.tflite", "saved_model.pb", "variables", "variables/variables.data-00000-of-00001"]
    assert (folder / "saved_model.pb").read_text() == "new"
    assert os.listdir(tmp_path) == ["export"]


def test_an_export_that_fails_to_write_keeps_the_earlier_file(tmp_path):
    """A TFLite file exported again onto a disk too full for it (the converter's own files go to
    the system's temporary folder): the earlier file stays, no partial file is left."""
    from efficientdet_tf.export.tflite import export_tflite  # noqa: PLC0415 (TensorFlow only)

    with mounted_tmpfs(tmp_path / "disk", 200_000) as disk:
        path = disk / "float32.tflite"
        earlier = os.urandom(150_000)
        path.write_bytes(earlier)
        with pytest.raises(WriteFailedError, match=re.escape(
                f"TFLite file {path} could not be written: No space left on device.")):
            export_tflite(make_detector(CONFIG).network, CONFIG, path, metadata=False)
        assert path.read_bytes() == earlier
        assert os.listdir(disk) == ["float32.tflite"]
