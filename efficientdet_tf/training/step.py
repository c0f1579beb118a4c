"""One training step of the official recipe, on one replica's share of the global batch, in
`keras.ops` for every backend.

Every replica runs the network on its part of the global batch and computes its share of the loss
(normalized by the positives, or for segmentation the labelled pixels, of the whole global batch)
and its gradients; these are clipped with
the factors of the summed gradient (`clip_factors`), summed across replicas by the optimizer and
applied, then the weight average is updated. So N replicas give the same update as one device
with the same global batch. (The official TPU trainer clipped each replica's gradient before the
cross-replica sum, so its update depended on the number of replicas.)
"""

from __future__ import annotations

import logging
import re

import keras
from keras import ops

from efficientdet_tf.backends import Replicas
from efficientdet_tf.data import batch_labels
from efficientdet_tf.data.formats.masks import IGNORE_LABEL
from efficientdet_tf.model.builder import model_outputs
from efficientdet_tf.model.weight_average import WeightAverage
from efficientdet_tf.training.callbacks import input_image_summary
from efficientdet_tf.training.learning_rate import WarmupSchedule
from efficientdet_tf.training.losses import (
    DetectionLoss,
    l2_regularization,
    segmentation_cross_entropy,
)

log = logging.getLogger(__name__)


class TrainingStep:
    """The official training step of `network` over its `trainable` variables, in `keras.ops`:
    the losses, the clipping, the update and the logs, which every backend's driver
    (`backends.current().train_step`) runs; the drivers differ only in how they take gradients
    and keep state.

    `loss` may be replaced (tests do) by any callable with `DetectionLoss`'s signature.
    """

    def __init__(self, config, network: keras.Model, trainable: list, average: WeightAverage):
        self.config = config
        self.network = network
        self.trainable = trainable
        self.average = average
        self.loss = DetectionLoss(config)

    @property
    def state_variables(self) -> list:
        """Variables the loss updates (the positives' moving average, if configured)."""
        average = self.loss.normalizer.average
        return [] if average is None else [average]

    def losses(self, images, labels, replicas: Replicas) -> dict:
        """This replica's share of each loss part and of their sum, `loss`: the network in
        training mode on this replica's images."""
        outputs = model_outputs(self.config, self.network(images, training=True))
        parts, head_loss = self._head_losses(outputs, labels, replicas)
        # Every replica adds its share, so that the sum over replicas is the whole term.
        parts["reg_l2_loss"] = l2_regularization(
            self.trainable, self.config.weight_decay) / replicas.count
        parts["loss"] = head_loss + parts["reg_l2_loss"]
        return parts

    def _head_losses(self, outputs, labels, replicas: Replicas) -> tuple[dict, object]:
        """This replica's share of each head's loss, normalized over the global batch, and their
        weighted sum: det_loss, plus seg_loss_weight * seg_loss with the segmentation head."""
        parts, total = {}, 0.0
        if outputs.class_outputs is not None:
            num_positives = replicas.sum(ops.sum(labels[batch_labels.MEAN_NUM_POSITIVES]))
            parts = self.loss(outputs.class_outputs, outputs.box_outputs, labels, num_positives)
            total = parts["det_loss"]
        if outputs.segmentation_logits is not None:
            cross_entropy, labelled = segmentation_cross_entropy(
                outputs.segmentation_logits, labels[batch_labels.SEGMENTATION_MASKS], IGNORE_LABEL)
            parts["seg_loss"] = cross_entropy / ops.maximum(replicas.sum(labelled), 1.0)
            total += self.config.seg_loss_weight * parts["seg_loss"]
        return parts, total

    def scale_loss(self, loss, optimizer):
        """`loss` times the float16 loss scale, if the optimizer scales losses."""
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer.scale_loss(loss)
        return loss

    def clip_gradients(self, gradients, replicas: Replicas, optimizer) -> list:
        """Scales every replica's gradients (of `scale_loss`) by the clip factors of their sum.

        The optimizer then sums them over replicas, giving exactly the clipped summed gradient
        (Keras's own clipping would clip each replica's share before the sum).
        """
        clip_norm = self.config.clip_gradients_norm
        if clip_norm <= 0:
            return gradients
        total = replicas.sum(list(gradients))
        norms = ops.stack([ops.norm(ops.reshape(g, [-1])) for g in total]) / _loss_scale(optimizer)
        factors = ops.unstack(clip_factors(norms, clip_norm))
        return [g * ops.cast(factor, g.dtype) for g, factor in zip(gradients, factors)]

    def apply(self, gradients, optimizer) -> None:
        """Applies the (clipped) gradients in place (summed over replicas by the optimizer), then
        updates the weight average. Loss scaling skips a step whose gradients overflow; the
        average skips it too, as in the official trainer (its average sits inside the loss scale
        optimizer)."""
        before = ops.copy(optimizer.iterations)
        optimizer.apply(gradients, self.trainable)
        self.average.update(applied=optimizer.iterations > before)

    def logs(self, parts: dict, optimizer) -> dict:
        """What a step reports: the loss parts and the learning rate."""
        return {**parts, "learning_rate": optimizer.learning_rate}

    def record_inputs(self, images, optimizer) -> None:
        """The batch's images as a TensorBoard summary every hparam img_summary_steps steps
        (a TensorFlow summary op: TensorFlow's step records them)."""
        input_image_summary(images, self.config, optimizer.iterations)


# The optimizers by hparam `optimizer` (the config's schema reads these names):
# (schedule, momentum) -> optimizer; Adam takes the momentum as beta_1, as the official
# get_optimizer. Named, because their variables' paths key the training checkpoints: Keras would
# number a second optimizer of the process ("sgd_1"), and a run could not resume in the process
# that ran another.
OPTIMIZERS = {
    "sgd": lambda schedule, momentum: keras.optimizers.SGD(
        schedule, momentum=momentum, name="sgd"),
    "adam": lambda schedule, momentum: keras.optimizers.Adam(
        schedule, beta_1=momentum, name="adam"),
}


def make_optimizer(config, global_batch_size: int, steps_per_epoch: int, num_epochs: int,
                   dtype_policy=None) -> keras.optimizers.Optimizer:
    """SGD with momentum (or Adam, momentum as beta_1) on the warm-up schedule over
    `num_epochs`, with dynamic loss scaling for a network of the mixed_float16 `dtype_policy`
    (default: Keras's global one), starting from `config.loss_scale` (null: Keras's 2**15), as
    the official `get_optimizer`.

    Gradient clipping happens in the step (`TrainingStep.clip_gradients`), on the global sum.
    """
    schedule = WarmupSchedule(config, global_batch_size, steps_per_epoch, num_epochs)
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}; known: {', '.join(OPTIMIZERS)}.")
    optimizer = OPTIMIZERS[config.optimizer](schedule, config.momentum)
    policy = keras.dtype_policies.get(dtype_policy or keras.config.dtype_policy())
    if policy.name == "mixed_float16":
        initial = {"initial_scale": config.loss_scale} if config.loss_scale else {}
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, name="loss_scale_optimizer", **initial)
    return optimizer


def clip_factors(norms, clip_norm: float):
    """The factor for each gradient tensor, from their norms, of the official two-stage clipping.

    As the official trainers (tf2/train_lib.py `train_step`, det_model_fn.py): every tensor is
    clipped to norm `clip_norm` (`tf.clip_by_norm`), then all of them together to global norm
    `clip_norm` (`tf.clip_by_global_norm`). Both stages only scale tensors, hence factors.
    """
    per_tensor = clip_norm / ops.maximum(norms, clip_norm)
    global_norm = ops.norm(norms * per_tensor)
    return per_tensor * (clip_norm / ops.maximum(global_norm, clip_norm))


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


def _loss_scale(optimizer):
    """The factor `TrainingStep.scale_loss` multiplies by."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return ops.cast(optimizer.dynamic_scale, "float32")
    return 1.0
