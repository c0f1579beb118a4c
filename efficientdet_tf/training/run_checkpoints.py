"""A training run's checkpoints in its model_dir: the one a run resumes from, and saves that fail
cleanly.

A run resumes from the newest checkpoint that reads back whole. Newer ones that do not (a copy
interrupted halfway truncates them) are moved to `model_dir/damaged/<time>/` with a warning, and
the `checkpoint` state file then lists the good ones only: the resumed run's saves neither
overwrite them nor prune them, and they stay for the user to inspect. A save that fails (a full
disk) removes its partial files and raises one `WriteFailedError` that names the last good
checkpoint, which the state file still names.
"""

from __future__ import annotations

import itertools
import logging
import os
import time

import tensorflow as tf
from google.protobuf import text_format

from efficientdet_tf.model.checkpoint import DamagedCheckpointError, checkpoint_damage
from efficientdet_tf.output_files import (
    WriteFailedError,
    remove,
    write_errors_named,
    written_whole,
)

DAMAGED_DIR_NAME = "damaged"
STATE_FILE_NAME = "checkpoint"  # tf.train.CheckpointManager's
CHECKPOINT_NAME = "ckpt"  # a run's checkpoints are model_dir/ckpt-<step>
log = logging.getLogger(__name__)


def newest_good_checkpoint(model_dir: str, set_aside: bool = True) -> str | None:
    """The newest checkpoint listed in model_dir's state file that reads back whole, or None
    when none is listed. `set_aside`: move the damaged newer ones out of the way (the chief
    does; the other workers of a multi-worker run only skip them). Raises
    `DamagedCheckpointError` when every listed checkpoint is damaged."""
    listed = _listed_checkpoints(model_dir)
    damaged = []
    for prefix in reversed(listed):
        damage = checkpoint_damage(prefix)
        if damage is None:
            break
        damaged.append(f"{prefix} ({damage})")
    else:
        if damaged:
            raise DamagedCheckpointError(
                f"Every checkpoint in {model_dir} is damaged: {'; '.join(damaged)}. Nothing to "
                f"resume from: move them out of {model_dir} (or use another model_dir) to start "
                "fresh.")
        return None
    if damaged and set_aside:
        _set_aside(model_dir, listed[len(listed) - len(damaged):], damaged)
    return prefix


def _listed_checkpoints(model_dir: str) -> list[str]:
    state = tf.train.get_checkpoint_state(model_dir)
    if state is None:
        return []
    listed = list(state.all_model_checkpoint_paths)
    if state.model_checkpoint_path not in listed:
        listed.append(state.model_checkpoint_path)
    return listed


def _set_aside(model_dir: str, prefixes: list[str], damaged: list[str]) -> None:
    """Moves the files of `prefixes` to damaged/<time>/ and drops them from the state file."""
    folder = os.path.join(model_dir, DAMAGED_DIR_NAME, time.strftime("%Y%m%dT%H%M%S"))
    with write_errors_named("Damaged checkpoints moved to", folder):
        tf.io.gfile.makedirs(folder)
        for prefix in prefixes:
            for path in tf.io.gfile.glob(prefix + ".*"):
                tf.io.gfile.rename(path, os.path.join(folder, os.path.basename(path)))
    _drop_from_state(model_dir, {os.path.basename(prefix) for prefix in prefixes})
    log.warning("Damaged checkpoints skipped and moved to %s: %s. Resuming from the one before.",
                folder, "; ".join(damaged))


def _drop_from_state(model_dir: str, names: set[str]) -> None:
    """Rewrites model_dir's state file without the checkpoints `names` (its paths relative, as
    tf.train.CheckpointManager writes them; the save times where the file has them)."""
    state = tf.train.get_checkpoint_state(model_dir)
    kept = [(os.path.basename(path), stamp) for path, stamp in itertools.zip_longest(
        state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps)
        if path is not None and os.path.basename(path) not in names]
    del state.all_model_checkpoint_paths[:]
    del state.all_model_checkpoint_timestamps[:]
    state.all_model_checkpoint_paths.extend(name for name, _ in kept)
    state.all_model_checkpoint_timestamps.extend(stamp for _, stamp in kept if stamp is not None)
    state.model_checkpoint_path = kept[-1][0]
    with written_whole(os.path.join(model_dir, STATE_FILE_NAME), "Checkpoint state") as path:
        with tf.io.gfile.GFile(path, "w") as file:
            file.write(text_format.MessageToString(state))


def save_checkpoint(manager: tf.train.CheckpointManager, step: int) -> str:
    """`manager.save(step)`; a write error removes the partial files and raises
    `WriteFailedError` naming the last good checkpoint."""
    prefix = os.path.join(manager.directory, f"{CHECKPOINT_NAME}-{step}")
    last_good = manager.latest_checkpoint
    keeps = (f"The last good checkpoint, {last_good}, stays the one {STATE_FILE_NAME!r} names: "
             "free some space and run again to resume from it." if last_good else
             "No checkpoint of this run was complete yet.")
    try:
        with write_errors_named("Checkpoint", prefix, keeps):
            return manager.save(checkpoint_number=step)
    except WriteFailedError:
        if prefix not in manager.checkpoints:
            for path in tf.io.gfile.glob(prefix + ".*") + tf.io.gfile.glob(prefix + "_temp*"):
                remove(path)
        raise
