"""Keras callbacks of a training run: resumable checkpoints, the NaN guard, per-step summaries
and the images of hparams img_summary_steps / sample_image.

They work on an `ObjectDetector` being fitted (`self.model`): its `network`, `optimizer` and
`weight_average`. Those acting at every batch end count the steps (`StepCountingCallback`)
instead of reading the model there.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
import yaml

from efficientdet_tf import backends
from efficientdet_tf.data.formats.images import decode_image
from efficientdet_tf.data.preprocess import to_pixels
from efficientdet_tf.errors import ConfigError, FaultError
from efficientdet_tf.inference.draw import DEFAULT_MIN_SCORE, draw_detections, overlay_mask
from efficientdet_tf.label_map import class_names
from efficientdet_tf.model.checkpoint import CheckpointMismatchError, TrainingState
from efficientdet_tf.output_files import (
    require_writable_folder,
    write_errors_named,
    written_whole,
)
from efficientdet_tf.training.run_checkpoints import (
    CHECKPOINT_NAME,
    newest_good_checkpoint,
    save_checkpoint,
)

log = logging.getLogger(__name__)
# The run's hparams in its model_dir: what --model_name takes to resume, evaluate or export it.
RUN_CONFIG_FILE_NAME = "config.yaml"


class NonFiniteLossError(FaultError):
    """The loss became NaN or infinite; the run stops without saving the broken weights."""


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training with `NonFiniteLossError` at the first non-finite loss, before any
    checkpoint callback could save the broken weights (`fit` puts it first). It reads the
    model's step (on JAX, a sync) only then."""

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if math.isfinite(loss):
            return
        step = current_step(self.model)
        parts = ", ".join(f"{k}: {float(v):.4g}" for k, v in logs.items())
        raise NonFiniteLossError(
            f"The loss became {loss} at step {step} ({parts}). Training stopped without saving: "
            "the latest checkpoint, if any, is the last good one. Usual fixes: a lower "
            "learning_rate or a longer lr_warmup_epoch, a larger batch, clip_gradients_norm, and "
            "checking the dataset's boxes (degenerate or wrongly normalized boxes, class ids "
            "beyond num_classes).")


class StepCountingCallback(keras.callbacks.Callback):
    """A callback that knows the optimizer's step at each batch end without reading the model.

    On JAX, Keras's fit keeps the training state outside the variables within an epoch, and each
    access to `Callback.model` copies all of it back into them (`jax_state_sync`), from where
    the next step takes it again: at every batch end, that would cost every step. So the
    optimizer's step is read from the model only where the state is in the variables anyway, at
    each epoch's start (Keras puts it there at every epoch end), and counted from there, as
    Keras's own TensorBoard and ModelCheckpoint count batches: at a batch end Keras gives the
    index in the epoch of the last batch run (with steps_per_execution, the last of the
    execution).

    Float16: a LossScaleOptimizer skips a step whose gradients overflow without advancing its
    `iterations`, so the count runs ahead of the optimizer's step by the steps skipped since it
    was last read, until the next epoch starts or `read_step` reads it again. What happens at
    given steps (checkpoints, images) is confirmed with `read_step`, so it happens at the
    optimizer's steps; the scalars of each step are written at the count.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._read = (current_step(self.model), 0)  # (the step, after how many of the batches)

    def counted_step(self, batch: int) -> int:
        """The optimizer's step after batch `batch` of the epoch (the index Keras gives
        `on_train_batch_end`), counted from the step last read (see the class)."""
        step, batches = self._read
        return step + batch + 1 - batches

    def read_step(self, batch: int) -> int:
        """The optimizer's step after batch `batch` of the epoch, read from the model (on JAX,
        copying the whole state back into the variables); the count goes on from it."""
        self._read = (current_step(self.model), batch + 1)
        return self._read[0]


class TrainingCheckpoints(StepCountingCallback):
    """Checkpoints of the whole training state in `model_dir`, and resumption from them.

    A fit with this callback resumes from the latest checkpoint in `model_dir` (weights,
    optimizer, weight average and step), mid-epoch included, and writes the detector's config
    there as config.yaml. It saves at every epoch end and, with `save_checkpoints_steps`, at the
    first batch end at or past each multiple of it. In a multi-worker run every worker takes part
    in saving; only the chief writes into `model_dir`.
    """

    def __init__(self, model_dir: str | os.PathLike, save_checkpoints_steps: int = 0,
                 keep_checkpoint_max: int = 5):
        super().__init__()
        require_writable_folder(model_dir, "model_dir")
        self.model_dir = str(model_dir)
        self.save_checkpoints_steps = save_checkpoints_steps
        self.keep_checkpoint_max = keep_checkpoint_max
        self._manager = None
        self._state = None
        self._last_saved_step = None

    def restore(self, detector) -> int | None:
        """Restores `detector` (optimizer built) from the newest good checkpoint in model_dir
        (see `run_checkpoints`); returns its step, or None when there is none."""
        chief = backends.current().is_chief(detector.training_distribution)
        latest = newest_good_checkpoint(self.model_dir, set_aside=chief)
        self._manager = self._make_manager(detector, chief)
        if latest:
            try:
                self._manager.checkpoint.restore(latest).assert_existing_objects_matched()
                self._state.after_restore()
            except (AssertionError, ValueError) as error:
                raise CheckpointMismatchError(
                    self._mismatch_message(latest, detector.config, error)) from None
        # Only now: a run refused above keeps the config.yaml that says how to resume it.
        if chief:
            save_run_config(detector.config, self.model_dir)
        if not latest:
            return None
        step = current_step(detector)
        log.info("Resumed from %s at step %d", latest, step)
        self._last_saved_step = step
        return step

    def _mismatch_message(self, checkpoint: str, config, error: Exception) -> str:
        changed = changed_run_values(config, self.model_dir)
        differences = (f"this config differs from its config.yaml in {', '.join(changed)}"
                       if changed else "its config.yaml has this config's values")
        # TensorFlow's text goes on to list the unmatched variables with their values.
        cause = " ".join(str(error).split()).split(". ")[0][:300]
        return (f"{self.model_dir} holds a run whose checkpoint {checkpoint} does not fit the "
                f"model of this config ({cause}; {differences}). Resume with the hparams of that "
                f"run (--model_name={os.path.join(self.model_dir, RUN_CONFIG_FILE_NAME)}) or "
                "start in a new model_dir.")

    def _make_manager(self, detector, chief: bool) -> tf.train.CheckpointManager:
        self._state = TrainingState(detector.network.weights, detector.weight_average,
                                    detector.optimizer.variables)
        return tf.train.CheckpointManager(
            self._state.checkpoint,
            self.model_dir if chief else tempfile.mkdtemp(prefix="edet_worker_"),
            max_to_keep=self.keep_checkpoint_max if chief else 1, checkpoint_name=CHECKPOINT_NAME)

    def on_train_batch_end(self, batch, logs=None):
        if self._save_due(self.counted_step(batch)) and self._save_due(self.read_step(batch)):
            self.save()

    def _save_due(self, step: int) -> bool:
        """Whether `step` is at or past a multiple of save_checkpoints_steps not saved yet."""
        every = self.save_checkpoints_steps
        return bool(every) and step // every > (self._last_saved_step or 0) // every

    def on_epoch_end(self, epoch, logs=None):
        if self._last_saved_step != self._step():
            self.save()

    def on_train_end(self, logs=None):
        if self._is_scratch():
            shutil.rmtree(self._manager.directory, ignore_errors=True)

    def save(self) -> str:
        step = self._step()  # first: on JAX, reading self.model puts the state into variables
        if self._is_scratch():  # removed after each fit call, and a resumed run makes two
            os.makedirs(self._manager.directory, exist_ok=True)
        self._state.before_save()
        path = save_checkpoint(self._manager, step)
        self._last_saved_step = step
        log.info("Saved checkpoint %s", path)
        return path

    def _is_scratch(self) -> bool:
        """Whether this worker saves into its own scratch directory (not the chief)."""
        return self._manager.directory != self.model_dir

    def _step(self) -> int:
        return current_step(self.model)


class StepSummaries(StepCountingCallback):
    """The training logs of every step (loss parts, learning rate) as TensorBoard scalars in
    `log_dir`, at the optimizer's step as counted (with float16, see `StepCountingCallback`);
    only the chief writes."""

    def __init__(self, log_dir: str | os.PathLike):
        super().__init__()
        self.log_dir = str(log_dir)
        self._writer = None

    def on_train_begin(self, logs=None):
        self._writer = (tf.summary.create_file_writer(self.log_dir)
                        if backends.current().is_chief(self.model.training_distribution)
                        else tf.summary.create_noop_writer())

    def on_train_batch_end(self, batch, logs=None):
        with log_write_errors_named(self.log_dir), self._writer.as_default(
                step=self.counted_step(batch)):
            for name, value in (logs or {}).items():
                if math.isfinite(float(value)):
                    tf.summary.scalar(name, float(value))

    def on_train_end(self, logs=None):
        with log_write_errors_named(self.log_dir):
            self._writer.flush()


def log_write_errors_named(log_dir: str):
    """A failed write of TensorBoard logs as one `WriteFailedError` naming their folder."""
    return write_errors_named("TensorBoard log in", log_dir, "Training stopped; the checkpoints "
                              "saved so far are complete.")


class ImageSummaries(StepCountingCallback):
    """With hparams img_summary_steps = n, TensorBoard images every n steps, as the official
    trainer: the first images of the training batch ('input_image', pixels again, in
    model_dir/train_images; `input_image_summary` writes them from inside the step), and with
    sample_image the current weights' detections (and mask) drawn on that image ('Test image',
    model_dir/test_images; official `DisplayCallback`, which needs img_summary_steps too).
    Only the chief writes.
    """

    def __init__(self, model_dir: str | os.PathLike, config):
        super().__init__()
        if not config.img_summary_steps:
            raise ConfigError("ImageSummaries needs hparam img_summary_steps (every how many "
                              "steps to write the images).")
        self.model_dir, self.config = str(model_dir), config
        self.every = config.img_summary_steps
        self.sample_image = _read_sample_image(config.sample_image)
        self._writers = None
        self._default_writer = None

    def on_train_begin(self, logs=None):
        if self._writers is None:  # once: a traced step keeps the writer it was traced with
            chief = backends.current().is_chief(self.model.training_distribution)
            self._writers = {
                name: tf.summary.create_file_writer(os.path.join(self.model_dir, name))
                if chief else tf.summary.create_noop_writer()
                for name in ("train_images", "test_images")}
        self._default_writer = self._writers["train_images"].as_default()
        self._default_writer.__enter__()

    def on_train_batch_end(self, batch, logs=None):
        if self.sample_image is None or self.counted_step(batch) % self.every:
            return
        step = self.read_step(batch)  # drawing reads the weights: on JAX, a sync anyway
        if step % self.every:  # float16 skipped steps: the optimizer is not there yet
            return
        with log_write_errors_named(self.model_dir), self._writers["test_images"].as_default(
                step=step):
            tf.summary.image("Test image", self.drawn_sample()[np.newaxis])

    def on_train_end(self, logs=None):
        self._default_writer.__exit__(None, None, None)
        with log_write_errors_named(self.model_dir):
            for writer in self._writers.values():
                writer.flush()

    def drawn_sample(self) -> np.ndarray:
        """uint8 [H, W, 3]: the sample image with the current weights' detections (scoring at
        least nms_configs.score_thresh, else 0.4, as the official callback) and mask."""
        outputs = self.model.predict(self.sample_image[np.newaxis])
        image = self.sample_image
        if "segmentation_masks" in outputs:
            image = overlay_mask(image, outputs["segmentation_masks"][0])
        if "detection_boxes" in outputs:
            image = np.asarray(draw_detections(
                image, outputs["detection_boxes"][0], outputs["detection_scores"][0],
                outputs["detection_classes"][0], class_names(self.config),
                min_score=self.config.nms_configs.score_thresh or DEFAULT_MIN_SCORE))
        return image


def input_image_summary(images: tf.Tensor, config, step: tf.Tensor) -> None:
    """Every config.img_summary_steps steps, the batch's first images (as pixels) as 'input_image'
    in the default summary writer, if any (`ImageSummaries` sets one); from the first replica."""
    if not config.img_summary_steps:
        return
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    due = tf.logical_and(tf.equal(step % config.img_summary_steps, 0), tf.equal(replica, 0))
    with tf.summary.record_if(due):
        tf.summary.image("input_image", to_pixels(images, config), step=step)


def _read_sample_image(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    if not tf.io.gfile.exists(path):
        raise ConfigError(f"hparam 'sample_image' = {path!r}: no such file.")
    return decode_image(tf.io.read_file(path)).numpy()


def changed_run_values(config, model_dir: str) -> list[str]:
    """The hparams whose values in `config` differ from the run's config.yaml in model_dir
    (none where there is no such file)."""
    path = os.path.join(model_dir, RUN_CONFIG_FILE_NAME)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as file:
        previous = yaml.safe_load(file.read()) or {}
    values = config.as_dict()
    return sorted(key for key in values if values[key] != previous.get(key))


def save_run_config(config, model_dir: str) -> None:
    """Writes config.yaml in model_dir, warning about the values a resumed run changed."""
    changed = changed_run_values(config, model_dir)
    if changed:
        log.warning("model_dir %s was started with other values of %s; config.yaml now "
                    "holds the new ones.", model_dir, ", ".join(changed))
    path = os.path.join(model_dir, RUN_CONFIG_FILE_NAME)
    with written_whole(path, "The run's config") as partial:
        config.save(partial)


def current_step(detector) -> int:
    """The optimizer steps `detector` has taken."""
    return int(keras.ops.convert_to_numpy(detector.optimizer.iterations))
