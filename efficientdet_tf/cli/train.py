"""`--mode=train` and `--mode=train_and_eval`: the official recipe on any tf.distribute strategy,
or on JAX over the devices of a Keras DataParallel distribution."""

from __future__ import annotations

import logging
import os

import tensorflow as tf
from absl import flags

from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import usage_errors
from efficientdet_tf.config import ConfigError
from efficientdet_tf.data.pipeline import source_from_spec, with_class_names_of
from efficientdet_tf.data.sources.mask_folder import MaskFolderSource
from efficientdet_tf.data.sources.named_boxes import NamedBoxesSource
from efficientdet_tf.diagnostics.training_curves import plot_training_curves
from efficientdet_tf.object_detector import ObjectDetector, epoch_steps
from efficientdet_tf.training.callbacks import (
    ImageSummaries,
    StepSummaries,
    TrainingCheckpoints,
)
from efficientdet_tf.training.distribution import (
    STRATEGIES,
    distribution_scope,
    is_chief,
    make_strategy,
    set_mixed_precision,
)

log = logging.getLogger(__name__)

flags.DEFINE_string("model_dir", None, "Where checkpoints, TensorBoard logs and config.yaml go; "
                    "a run started again with the same model_dir resumes.")
flags.DEFINE_string("train_file_pattern", None,
                    "Training data: a TFRecord glob, 'coco:<annotations.json>:<image_dir>', "
                    "'voc:<xml_dir>:<image_dir>', 'csv:<file.csv>:<image_dir>', "
                    "'masks:<masks_dir>:<image_dir>[:<ids.txt>]' (segmentation; voc/csv/masks: "
                    "add ':train:10%' to hold out 10% for validation), or 'synthetic' (the "
                    "built-in demo dataset).")
flags.DEFINE_integer("num_epochs", None, "Overrides hparams num_epochs.")
flags.DEFINE_integer("num_examples_per_epoch", None,
                     "Images per epoch; default: the dataset's size (TFRecords are counted once).")
flags.DEFINE_string("pretrained_ckpt", None,
                    "Detector checkpoint to start from (official layout or one of ours, or an "
                    "official name such as efficientdet-d0); the class/box heads are skipped when "
                    "their shapes differ (hparams skip_mismatch).")
flags.DEFINE_string("backbone_ckpt", None, "EfficientNet checkpoint to start the backbone from "
                    "(a path, or an official name such as efficientnet-b0).")
flags.DEFINE_enum("strategy", "default", STRATEGIES,
                  "default: one device; gpus: all local GPUs; multi-worker: from TF_CONFIG; "
                  "tpu: a TPU or TPU pod (--tpu).")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address, with --strategy=tpu.")
flags.DEFINE_string("tpu_zone", None, "GCE zone of the TPU.")
flags.DEFINE_string("gcp_project", None, "GCP project of the TPU.")
flags.DEFINE_integer("tf_random_seed", None, "Seed for weights initialization and data order.")
flags.DEFINE_integer("steps_per_execution", 1, "Training steps per tf.function call.")
flags.DEFINE_integer("save_checkpoints_steps", 0,
                     "Also save a checkpoint every this many steps (0: only at epoch ends).")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints kept in model_dir.")


def run(flag_values) -> None:
    evaluating = flag_values.mode == "train_and_eval"
    _require(flag_values, "model_dir", "train_file_pattern",
             *(["val_file_pattern"] if evaluating else []))
    if flag_values.tf_random_seed is not None:
        tf.keras.utils.set_random_seed(flag_values.tf_random_seed)
    strategy = make_strategy(flag_values.strategy, flag_values.tpu, flag_values.tpu_zone,
                             flag_values.gcp_project)
    config = config_from_flags(flag_values)
    if flag_values.num_epochs:
        config = config.override({"num_epochs": flag_values.num_epochs})
    set_mixed_precision(config.mixed_precision, strategy)
    with usage_errors():
        source = source_from_spec(flag_values.train_file_pattern, config)
        config = with_class_names_of(source, config)
        val_source = source_from_spec(flag_values.val_file_pattern, config) if evaluating else None
    for data in (source, val_source):
        if isinstance(data, (NamedBoxesSource, MaskFolderSource)):
            print(data.report())
    steps_per_epoch = _steps_per_epoch(flag_values, source)
    with distribution_scope(strategy):
        detector = ObjectDetector(config)
    if flag_values.pretrained_ckpt:
        detector.start_training_from(flag_values.pretrained_ckpt)
    elif flag_values.backbone_ckpt:
        detector.start_training_from(flag_values.backbone_ckpt, only_scope=config.backbone_name)
    model_dir = flag_values.model_dir
    callbacks = [
        TrainingCheckpoints(model_dir, flag_values.save_checkpoints_steps,
                            flag_values.keep_checkpoint_max),
        StepSummaries(os.path.join(model_dir, "train")),
    ]
    if config.img_summary_steps:
        callbacks.append(ImageSummaries(model_dir, config))
    detector.compile(steps_per_execution=flag_values.steps_per_execution)
    detector.fit(source, epochs=config.num_epochs, batch_size=flag_values.batch_size,
                 steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                 validation_data=val_source, validation_freq=config.map_freq,
                 validation_options={
                     "eval_samples": flag_values.eval_samples,
                     "val_json_file": flag_values.val_json_file,
                     "summary_writer": os.path.join(model_dir, "eval")},
                 seed=flag_values.tf_random_seed)
    if is_chief(strategy):  # the one that wrote the logs
        print(f"Training curves written to {plot_training_curves(model_dir)}")


def _require(flag_values, *names: str) -> None:
    missing = [f"--{name}" for name in names if not getattr(flag_values, name)]
    if missing:
        raise ConfigError(f"--mode={flag_values.mode} needs {', '.join(missing)}.")


def _steps_per_epoch(flag_values, source) -> int:
    examples = flag_values.num_examples_per_epoch or source.num_examples
    if not examples:
        examples = source.count_examples()
        print(f"Counted {examples} training examples in {flag_values.train_file_pattern}; "
              f"--num_examples_per_epoch={examples} skips the count.")
    return epoch_steps(examples, flag_values.batch_size)
