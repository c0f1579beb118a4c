"""Validation inside `fit`: COCO metrics (and mIoU with the segmentation head) of the averaged
weights, in Keras's epoch logs."""

from __future__ import annotations

import keras

from efficientdet_tf import backends
from efficientdet_tf.evaluation.model_evaluation import evaluate


class ValidationMetrics(keras.callbacks.Callback):
    """The metrics of `evaluate` (COCO; mIoU with the segmentation head) of the averaged weights
    on a validation source, in the epoch logs as `val_AP`, `val_AP50`, ..., `val_mIoU`, every
    `every` epochs and after epoch `last_epoch` (1-based). In a run of several processes every
    one validates, and only the chief writes the TensorBoard scalars.

    `evaluation_options` go to `evaluation.model_evaluation.evaluate` (batch_size,
    eval_samples, val_json_file, summary_writer: TensorBoard scalars at the optimizer's step).
    """

    def __init__(self, source, every: int = 1, last_epoch: int | None = None,
                 **evaluation_options):
        super().__init__()
        self.source = source
        self.every = every
        self.last_epoch = last_epoch
        self.evaluation_options = evaluation_options

    def on_epoch_end(self, epoch, logs=None):
        epoch += 1
        if not (epoch == self.last_epoch or (self.every > 0 and epoch % self.every == 0)):
            return
        detector = self.model
        options = self.evaluation_options
        if not backends.current().is_chief(detector.training_distribution):
            options = {**options, "summary_writer": None}  # the chief writes the run's logs
        with detector.weight_average.averaged_weights():
            metrics = evaluate(detector.compiled_detector(), detector.config, self.source,
                               step=int(keras.ops.convert_to_numpy(detector.optimizer.iterations)),
                               **options)
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in metrics.items()})
