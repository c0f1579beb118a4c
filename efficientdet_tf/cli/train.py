"""`--mode=train` and `--mode=train_and_eval`: the official recipe on any tf.distribute strategy,
or on JAX over the devices of a Keras DataParallel distribution, in one process or several."""

from __future__ import annotations

import logging
import os

import tensorflow as tf
from absl import flags

from efficientdet_tf import backends
from efficientdet_tf.backends.base import STRATEGIES
from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import usage_errors
from efficientdet_tf.data.pipeline import DATASET_SPECS
from efficientdet_tf.data.sources.mask_folder import MaskFolderSource
from efficientdet_tf.data.sources.named_boxes import NamedBoxesSource
from efficientdet_tf.diagnostics.training_curves import plot_training_curves
from efficientdet_tf.errors import ConfigError
from efficientdet_tf.object_detector import ObjectDetector
from efficientdet_tf.output_files import require_writable_folder
from efficientdet_tf.training.callbacks import (
    ImageSummaries,
    StepSummaries,
    TrainingCheckpoints,
)
from efficientdet_tf.training.fitting import epoch_steps, training_data

log = logging.getLogger(__name__)

flags.DEFINE_string("model_dir", None, "Where checkpoints, TensorBoard logs and config.yaml go; "
                    "a run started again with the same model_dir resumes.")
flags.DEFINE_string("train_file_pattern", None,
                    f"Training data: {DATASET_SPECS}; e.g. 'synthetic' (the built-in demo "
                    "dataset), or add ':train:10%' to a voc/csv/masks spec to hold out 10% for "
                    "validation.")
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
                  "default: one device; gpus: all local GPUs; multi-worker: several processes, "
                  "on TensorFlow the workers of TF_CONFIG, on JAX those of "
                  "KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and "
                  "KERAS_DISTRIBUTION_PROCESS_ID; tpu: a TPU or TPU pod slice (TensorFlow: "
                  "--tpu; JAX: the hosts of the TPU VM it runs on).")
flags.DEFINE_integer("process_join_timeout", 300,
                     "Seconds a process of a run in several processes on JAX "
                     "(--strategy=multi-worker or tpu) waits for the others to join.")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address, with --strategy=tpu "
                    "(TensorFlow).")
flags.DEFINE_string("tpu_zone", None, "GCE zone of the TPU.")
flags.DEFINE_string("gcp_project", None, "GCP project of the TPU.")
flags.DEFINE_integer("tf_random_seed", None, "Seed for weights initialization and data order.")
flags.DEFINE_integer("steps_per_execution", 1, "Training steps per tf.function call.")
flags.DEFINE_integer("save_checkpoints_steps", 0,
                     "Also save a checkpoint every this many steps (0: only at epoch ends).")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Checkpoints kept in model_dir.")


def join_processes(flag_values) -> None:
    """Joins the other processes of the run (JAX's --strategy=multi-worker and tpu): before the
    Keras backend first looks at its devices."""
    if flag_values.process_join_timeout < 1:
        raise ConfigError(f"--process_join_timeout={flag_values.process_join_timeout}: give "
                          "the seconds to wait for the other processes, 1 or more.")
    backends.current().join_processes(flag_values.strategy, flag_values.process_join_timeout)


def run(flag_values) -> None:
    """`ObjectDetector.fit` with the flags' data, distribution and model_dir callbacks."""
    evaluating = flag_values.mode == "train_and_eval"
    _require(flag_values, "model_dir", "train_file_pattern",
             *(["val_file_pattern"] if evaluating else []))
    model_dir = flag_values.model_dir
    require_writable_folder(model_dir, "--model_dir")
    if flag_values.tf_random_seed is not None:
        tf.keras.utils.set_random_seed(flag_values.tf_random_seed)
    backend = backends.current()
    distribution = backend.make_distribution(flag_values.strategy, flag_values.tpu,
                                             flag_values.tpu_zone, flag_values.gcp_project)
    config = config_from_flags(flag_values)
    if flag_values.num_epochs:
        config = config.override({"num_epochs": flag_values.num_epochs})
    with usage_errors():
        data = training_data(flag_values.train_file_pattern,
                             flag_values.val_file_pattern if evaluating else None, config)
    for source in (data.source, data.validation):
        if isinstance(source, (NamedBoxesSource, MaskFolderSource)):
            print(source.report())
    with backend.distribution_scope(distribution):
        detector = ObjectDetector(data.config)
    if flag_values.pretrained_ckpt:
        detector.start_training_from(flag_values.pretrained_ckpt)
    elif flag_values.backbone_ckpt:
        detector.start_training_from(flag_values.backbone_ckpt,
                                     only_scope=data.config.backbone_name)
    callbacks = [
        TrainingCheckpoints(model_dir, flag_values.save_checkpoints_steps,
                            flag_values.keep_checkpoint_max),
        StepSummaries(os.path.join(model_dir, "train")),
    ]
    if data.config.img_summary_steps:
        callbacks.append(ImageSummaries(model_dir, data.config))
    detector.compile(steps_per_execution=flag_values.steps_per_execution)
    detector.fit(data.source, epochs=data.config.num_epochs, batch_size=flag_values.batch_size,
                 steps_per_epoch=_steps_per_epoch(flag_values, data.source),
                 callbacks=callbacks, validation_data=data.validation,
                 validation_freq=data.config.map_freq,
                 validation_options={
                     "eval_samples": flag_values.eval_samples,
                     "val_json_file": flag_values.val_json_file,
                     "summary_writer": os.path.join(model_dir, "eval")},
                 seed=flag_values.tf_random_seed)
    if backend.is_chief(distribution):  # the one that wrote the logs
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
