"""The training loop: official recipe, any tf.distribute strategy, resumable, checkpointed.

One step: every replica runs the network on its part of the global batch and computes its share
of the loss (normalized by the positives of the whole global batch) and its gradients; these are
clipped with the factors of the summed gradient (`clip_factors`), summed across replicas by the
optimizer and applied, then the weight average is updated. So N replicas give the same update as
one device with the same global batch. (The official TPU trainer clipped each replica's gradient
before the cross-replica sum, so its update depended on the number of replicas.)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from efficientdet_tf.config import Config
from efficientdet_tf.data.pipeline import build_dataset
from efficientdet_tf.model.builder import build_model
from efficientdet_tf.model.checkpoint import (
    CheckpointMismatchError,
    VariablesByPath,
    load_training_start,
)
from efficientdet_tf.model.weight_average import WeightAverage
from efficientdet_tf.training.learning_rate import WarmupSchedule
from efficientdet_tf.training.losses import DetectionLoss, l2_regularization

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops without saving the broken weights."""


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How to run training (the recipe itself comes from the config)."""

    model_dir: str
    global_batch_size: int
    steps_per_epoch: int
    num_epochs: int
    steps_per_execution: int = 1
    save_checkpoints_steps: int = 0  # 0: only at each epoch end
    keep_checkpoint_max: int = 5
    pretrained_ckpt: str | None = None  # official-layout detector weights to start from
    backbone_ckpt: str | None = None  # official-layout EfficientNet weights to start from

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.num_epochs


class Trainer:
    """Owns the model, optimizer, weight average and checkpoints of one run in `model_dir`."""

    def __init__(self, config: Config, settings: TrainSettings,
                 strategy: tf.distribute.Strategy | None = None):
        self.config = config
        self.settings = settings
        self.strategy = strategy or tf.distribute.get_strategy()
        replicas = self.strategy.num_replicas_in_sync
        if settings.global_batch_size % replicas:
            raise ValueError(
                f"The global batch size {settings.global_batch_size} does not split evenly over "
                f"{replicas} replicas; use a multiple of {replicas}.")
        with self.strategy.scope():
            self.model = build_model(config, synchronized_batch_norm=replicas > 1)
            self.trainable = trainable_variables(self.model, config.var_freeze_expr)
            self.optimizer = make_optimizer(config, settings)
            self.optimizer.build(self.trainable)
            self.ema = WeightAverage(self.trainable, config.moving_average_decay)
        self.loss = DetectionLoss(config)
        self.checkpoint = tf.train.Checkpoint(
            model=VariablesByPath(self.model.weights),
            optimizer=VariablesByPath(self.optimizer.variables),
            ema=self.ema)
        self.is_chief = is_chief(self.strategy)
        # Every worker takes part in saving; only the chief writes into model_dir.
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            settings.model_dir if self.is_chief else tempfile.mkdtemp(prefix="edet_worker_"),
            max_to_keep=settings.keep_checkpoint_max if self.is_chief else 1,
            checkpoint_name="ckpt", step_counter=self.optimizer.iterations)
        self._train_steps = tf.function(self._train_steps_fn)
        self._last_saved_step = None

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    # --- starting point ------------------------------------------------------------------------

    def restore_or_initialize(self) -> int:
        """Resumes from the latest checkpoint in model_dir, else starts from the given weights."""
        latest = tf.train.latest_checkpoint(self.settings.model_dir)
        if latest:
            try:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
            except (AssertionError, ValueError) as error:
                raise CheckpointMismatchError(
                    f"{self.settings.model_dir} holds a run whose checkpoint {latest} does not "
                    f"fit the model of this config ({error}). Resume with the hparams of that "
                    "run (its config.yaml) or start in a new --model_dir.") from None
            log.info("Resumed from %s at step %d", latest, self.step)
            self._last_saved_step = self.step
            return self.step
        if self.settings.pretrained_ckpt:
            load_training_start(self.model, self.ema, self.settings.pretrained_ckpt,
                                skip_mismatch=self.config.skip_mismatch)
        elif self.settings.backbone_ckpt:
            load_training_start(self.model, self.ema, self.settings.backbone_ckpt,
                                only_scope=self.config.backbone_name)
        else:
            self.ema.reset()
        return 0

    # --- the step ------------------------------------------------------------------------------

    def _replica_step(self, images, labels):
        """One step on this replica's share of the batch; returns the global batch's loss."""
        context = tf.distribute.get_replica_context()
        local_positives = tf.reduce_sum(labels["mean_num_positives"])
        num_positives = context.all_reduce(tf.distribute.ReduceOp.SUM, local_positives)
        with tf.GradientTape() as tape:
            class_outputs, box_outputs = self.model(images, training=True)
            parts = self.loss(class_outputs, box_outputs, labels, num_positives)
            # Every replica adds its share, so that the sum over replicas is the whole term.
            parts["reg_l2_loss"] = l2_regularization(
                self.trainable, self.config.weight_decay) / context.num_replicas_in_sync
            parts["loss"] = parts["det_loss"] + parts["reg_l2_loss"]
            scaled_loss = _scale_loss(self.optimizer, parts["loss"])
        gradients = tape.gradient(scaled_loss, self.trainable)
        gradients = self._clip_gradients(gradients, context)
        step = tf.identity(self.optimizer.iterations)
        self.optimizer.apply_gradients(zip(gradients, self.trainable))  # sums over replicas
        # Loss scaling skips a step whose gradients overflow; the average skips it too, as in the
        # official trainer (its average sits inside the loss scale optimizer).
        self.ema.update(applied=self.optimizer.iterations > step)
        return context.all_reduce(tf.distribute.ReduceOp.SUM, parts)

    def _clip_gradients(self, gradients, context):
        """Scales every replica's gradients by the clip factors of their sum.

        The optimizer then sums them over replicas, giving exactly the clipped summed gradient
        (Keras's own clipping would clip each replica's share before the sum).
        """
        clip_norm = self.config.clip_gradients_norm
        if clip_norm <= 0:
            return gradients
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        norms = tf.stack([tf.norm(g) for g in total]) / _loss_scale(self.optimizer)
        factors = tf.unstack(clip_factors(norms, clip_norm))
        return [g * tf.cast(factor, g.dtype) for g, factor in zip(gradients, factors)]

    def _train_steps_fn(self, iterator, num_steps):
        """Runs up to `num_steps` steps; stops after the first non-finite loss."""
        parts = {key: tf.constant(np.nan) for key in self._loss_keys()}
        finite = tf.constant(True)
        for _ in tf.range(num_steps):
            replica_parts = self.strategy.run(self._replica_step, args=next(iterator))
            parts = {key: self.strategy.experimental_local_results(value)[0]
                     for key, value in replica_parts.items()}
            finite = tf.math.is_finite(parts["loss"])
            if not finite:
                break
        return parts, finite

    def _loss_keys(self):
        keys = ["cls_loss", "box_loss", "det_loss", "reg_l2_loss", "loss"]
        return keys + (["iou_loss"] if self.config.iou_loss_type else [])

    # --- the run -------------------------------------------------------------------------------

    def distributed_dataset(self, source, seed: int | None = None):
        per_replica = self.settings.global_batch_size // self.strategy.num_replicas_in_sync

        def dataset_fn(input_context):
            return build_dataset(source, self.config, is_training=True, batch_size=per_replica,
                                 input_context=input_context, seed=seed)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def fit(self, source, evaluate=None, seed: int | None = None, verbose: bool = True):
        """Trains to `total_steps`, resuming if model_dir holds a checkpoint.

        `evaluate(trainer, epoch)` runs every config.map_freq epochs and at the end, and returns a
        dict of metrics. Returns the list of per-epoch logs.
        """
        settings = self.settings
        self.restore_or_initialize()
        iterator = iter(self.distributed_dataset(source, seed))
        writer = (tf.summary.create_file_writer(os.path.join(settings.model_dir, "train"))
                  if self.is_chief else tf.summary.create_noop_writer())
        history = []
        while self.step < settings.total_steps:
            epoch = self.step // settings.steps_per_epoch
            epoch_end = (epoch + 1) * settings.steps_per_epoch
            progress = keras.utils.Progbar(
                settings.steps_per_epoch, verbose=1 if verbose else 0, unit_name="step")
            if verbose:
                print(f"Epoch {epoch + 1}/{settings.num_epochs}")
            while self.step < epoch_end:
                logs = self.run_steps(iterator, self._steps_until_pause(epoch_end))
                progress.update(self.step - epoch * settings.steps_per_epoch,
                                values=list(logs.items()))
                _write_scalars(writer, logs, self.step)
                if self._checkpoint_due():
                    self.save()
            if self._last_saved_step != self.step:
                self.save()
            logs["epoch"] = epoch + 1
            if evaluate and _evaluation_due(epoch + 1, self.config.map_freq, settings.num_epochs):
                with self.ema.averaged_weights():
                    logs.update(evaluate(self, epoch + 1))
            history.append(logs)
        if not self.is_chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)
        return history

    def _steps_until_pause(self, epoch_end: int) -> int:
        """Steps to the next stop: end of execution, end of epoch, or a checkpoint."""
        steps = min(self.settings.steps_per_execution, epoch_end - self.step)
        every = self.settings.save_checkpoints_steps
        if every:
            steps = min(steps, every - self.step % every)
        return steps

    def _checkpoint_due(self) -> bool:
        every = self.settings.save_checkpoints_steps
        return bool(every) and self.step % every == 0

    def run_steps(self, iterator, num_steps: int) -> dict[str, float]:
        """Runs `num_steps` training steps from a distributed iterator; returns the last logs."""
        parts, finite = self._train_steps(iterator, tf.constant(num_steps))
        if not bool(finite):
            loss_parts = ", ".join(f"{k}: {float(v):.4g}" for k, v in parts.items())
            raise NonFiniteLossError(
                f"The loss became {float(parts['loss'])} at step {self.step} ({loss_parts}). "
                f"Training stopped without saving; the latest checkpoint in "
                f"{self.settings.model_dir} is the last good one. Usual fixes: a lower "
                "learning_rate or a longer lr_warmup_epoch, a larger batch, clip_gradients_norm, "
                "and checking the dataset's boxes (degenerate or wrongly normalized boxes, class "
                "ids beyond num_classes).")
        logs = {key: float(value) for key, value in parts.items()}
        logs["learning_rate"] = float(self.optimizer.learning_rate)
        return logs

    def save(self) -> str:
        path = self.manager.save(checkpoint_number=self.step)
        self._last_saved_step = self.step
        log.info("Saved checkpoint %s", path)
        return path


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process is the chief of its cluster (always, outside multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver else {}
    if not cluster or resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in cluster


def make_optimizer(config: Config, settings: TrainSettings) -> keras.optimizers.Optimizer:
    """SGD with momentum (or Adam, momentum as beta_1), with loss scaling for float16.

    Gradient clipping happens in the step (`Trainer._clip_gradients`), on the global sum.
    """
    schedule = WarmupSchedule(config, settings.global_batch_size, settings.steps_per_epoch)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum)
    else:
        optimizer = keras.optimizers.Adam(schedule, beta_1=config.momentum)
    if keras.config.dtype_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def clip_factors(norms: tf.Tensor, clip_norm: float) -> tf.Tensor:
    """The factor for each gradient tensor, from their norms, of the official two-stage clipping.

    As the official trainers (tf2/train_lib.py `train_step`, det_model_fn.py): every tensor is
    clipped to norm `clip_norm` (`tf.clip_by_norm`), then all of them together to global norm
    `clip_norm` (`tf.clip_by_global_norm`). Both stages only scale tensors, hence factors.
    """
    per_tensor = clip_norm / tf.maximum(norms, clip_norm)
    global_norm = tf.norm(norms * per_tensor)
    return per_tensor * (clip_norm / tf.maximum(global_norm, clip_norm))


def trainable_variables(model: keras.Model, freeze_expr: str | None) -> list:
    """The model's trainable variables, less those whose path matches `var_freeze_expr`."""
    if not freeze_expr:
        return list(model.trainable_variables)
    pattern = re.compile(freeze_expr)
    kept = [v for v in model.trainable_variables if not pattern.match(v.path)]
    if len(kept) == len(model.trainable_variables):
        log.warning("var_freeze_expr %r matches no variable; nothing is frozen.", freeze_expr)
    if not kept:
        raise ValueError(f"var_freeze_expr {freeze_expr!r} freezes every variable.")
    return kept


def _scale_loss(optimizer, loss):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.scale_loss(loss)
    return loss


def _loss_scale(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.dynamic_scale, tf.float32)
    return 1.0


def _evaluation_due(epoch: int, every: int, last: int) -> bool:
    return epoch == last or (every > 0 and epoch % every == 0)


def _write_scalars(writer, logs: dict[str, float], step: int) -> None:
    with writer.as_default(step=step):
        for name, value in logs.items():
            if math.isfinite(value):
                tf.summary.scalar(name, value)
