"""The schema: every hparam's type, and for a number its range.

`hparams/base.yaml` alone says which keys exist. A bool or str key takes the type of its default;
every other key declares its type below: a number with its range (an unranged number cannot be
declared by omission), a choice among the names its implementation knows (read from the dict or
tuple beside that implementation, so a new one is reachable at once), a value that may be null.
Building the schema imports those implementations (TensorFlow and Keras with them) and reads
base.yaml, so it happens once, on first use, not on import.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

from efficientdet_tf.config.files import HPARAMS_DIR, read_yaml
from efficientdet_tf.config.structured import BackboneConfig, FpnConfig
from efficientdet_tf.config.types import (
    BOOL,
    STR,
    Float,
    Heads,
    ImageSize,
    Int,
    LabelMap,
    ListOf,
    Nullable,
    NullMeans,
    OfficialDefaultOnly,
    OneOf,
    Rgb,
    ValueType,
    ZeroIsNull,
)
from efficientdet_tf.errors import ConfigError

HEADS = ("object_detection", "segmentation")  # the values of the hparam `heads`


def _official_only() -> dict[str, OfficialDefaultOnly]:
    """Official keys that have no job here: their official default only."""
    return {
        "data_format": OfficialDefaultOnly(
            "channels_last", "the networks are channels_last only (TensorFlow picks the fastest "
                             "GPU layout itself); remove the key."),
        "strategy": OfficialDefaultOnly(
            None, "the distribution strategy is the flag --strategy (default, gpus, "
                  "multi-worker, tpu), or build ObjectDetector inside strategy.scope()."),
        "is_training_bn": OfficialDefaultOnly(
            True, "batch norm follows Keras's training flag (it trains in fit, runs in "
                  "inference mode elsewhere); remove the key."),
        "use_keras_model": OfficialDefaultOnly(
            True, "the official legacy (TF1 estimator) model is not ported; the Keras model is "
                  "the only one. Remove the key."),
        "ckpt_var_scope": OfficialDefaultOnly(
            None, "checkpoints load by the official variable names; start from a part of one "
                  "with --backbone_ckpt (or --pretrained_ckpt and var_freeze_expr)."),
        "dataset_type": OfficialDefaultOnly(
            None, "the data is TFRecord files or another dataset spec of --train_file_pattern "
                  "(the official 'sstable' reader is Google-internal); remove the key."),
        "save_freq": OfficialDefaultOnly(
            "epoch", "checkpoints are saved at every epoch end; add --save_checkpoints_steps=N "
                     "(TrainingCheckpoints(save_checkpoints_steps=N)) to save every N steps too."),
        "verbose": OfficialDefaultOnly(
            1, "checkpoint saving is logged through Python logging; set the log level (absl "
               "--verbosity) instead."),
    }


def declared_types() -> dict[str, Any]:
    """The types that a key's default does not tell (nested for groups)."""
    from efficientdet_tf.data.augmentation.autoaugment import POLICIES
    from efficientdet_tf.inference.postprocess import NMS_METHODS
    from efficientdet_tf.model.bifpn import FUSIONS
    from efficientdet_tf.model.efficientnet import EFFICIENTNET_SPECS
    from efficientdet_tf.model.fpn_topology import TOPOLOGIES
    from efficientdet_tf.model.layers import ACTIVATIONS
    from efficientdet_tf.training.learning_rate import DECAYS
    from efficientdet_tf.training.losses import IOU_LOSS_TYPES
    from efficientdet_tf.training.step import OPTIMIZERS

    fpn_weight_method = NullMeans(OneOf(FUSIONS), "fastattn")
    return {
        # --- network
        "backbone_name": OneOf(EFFICIENTNET_SPECS),
        "backbone_survival_prob": Nullable(Float(gt=0, le=1)),  # a keep probability
        "act_type": OneOf(ACTIVATIONS),
        "batch_norm_momentum": Float(ge=0, lt=1),
        "batch_norm_epsilon": Float(gt=0),
        "image_size": ImageSize(),  # each side at least 2**(min_level + 1): a joint rule
        "min_level": Int(ge=1, le=5),  # the backbone's levels are 1..5
        # Above 5, levels are pooled from the backbone's last; at 12 the stride is 4096 px.
        "max_level": Int(ge=2, le=12),
        "num_scales": Int(ge=1),
        "aspect_ratios": ListOf(Float(gt=0)),
        "anchor_scale": Float(gt=0),
        "fpn_name": NullMeans(OneOf(TOPOLOGIES), "bifpn"),
        "fpn_weight_method": fpn_weight_method,
        "fpn_num_filters": Int(ge=1),
        "fpn_cell_repeats": Int(ge=1),
        "box_class_repeats": Int(ge=1),
        "survival_prob": Nullable(Float(gt=0, le=1)),
        "class_prior_prob": Float(gt=0, lt=1),  # the bias is -log((1 - p) / p)
        "num_classes": Int(ge=1),
        "heads": Heads(HEADS),
        "seg_num_classes": Int(ge=2),  # the background counts as a class
        "fpn_config": Nullable(FpnConfig(fpn_weight_method)),
        "backbone_config": Nullable(BackboneConfig()),
        # --- data
        "mean_rgb": Rgb(Float()),
        "stddev_rgb": Rgb(Float(gt=0)),
        "label_map": Nullable(LabelMap()),
        "jitter_min": Float(gt=0),  # scale factors; jitter_min <= jitter_max is joint
        "jitter_max": Float(gt=0),
        "autoaugment_policy": Nullable(OneOf(POLICIES)),
        "max_instances_per_image": Int(ge=1),
        "target_size": Nullable(ImageSize()),
        # --- loss: the focal loss's alpha weighs positives against negatives, its gamma
        # (0: cross-entropy) down-weighs easy anchors; delta is the Huber loss's kink.
        "alpha": Float(ge=0, le=1),
        "gamma": Float(ge=0),
        "label_smoothing": Float(ge=0, lt=1),
        "delta": Float(gt=0),
        "box_loss_weight": Float(ge=0),  # a weight of 0 drops that term
        "iou_loss_type": Nullable(OneOf(IOU_LOSS_TYPES)),
        "iou_loss_weight": Float(ge=0),
        "seg_loss_weight": Float(ge=0),
        "weight_decay": Float(ge=0),  # 0: off
        # m in (0, 1): a moving average of the positives; null, 0 or negative: the batch's own.
        "positives_momentum": Nullable(Float(lt=1)),
        # --- optimization
        "optimizer": OneOf(OPTIMIZERS),
        "momentum": Float(ge=0, lt=1),  # SGD's momentum, Adam's beta_1
        "learning_rate": Float(gt=0),
        "lr_warmup_init": Float(gt=0),
        "lr_warmup_epoch": Float(ge=0),  # 0: no warm-up
        "lr_decay_method": OneOf(DECAYS),
        "first_lr_drop_epoch": Float(ge=0),
        "second_lr_drop_epoch": Float(ge=0),
        "poly_lr_power": Float(gt=0),
        "clip_gradients_norm": Float(ge=0),  # 0: no clipping
        "num_epochs": Int(ge=1),
        "moving_average_decay": Float(ge=0, lt=1),  # 0: no moving average
        "loss_scale": Nullable(Float(gt=0)),  # null: Keras's 2**15
        "var_freeze_expr": Nullable(STR),
        "map_freq": Int(ge=1),
        # --- detections out; the official code reads 0 as the method's default (`or`)
        "nms_configs": {
            "method": OneOf(NMS_METHODS),
            "iou_thresh": ZeroIsNull(Float(ge=0, le=1)),
            "score_thresh": ZeroIsNull(Float(ge=0, le=1)),
            "sigma": ZeroIsNull(Float(ge=0)),
            "pyfunc": OfficialDefaultOnly(
                False, "NMS runs in the TensorFlow graph here (the official numpy py_function "
                       "NMS is not ported); remove the key."),
            "max_nms_inputs": Int(ge=0),  # 0 keeps every anchor
            "max_output_size": Int(ge=1),
        },
        "tflite_max_detections": Int(ge=1),
        "img_summary_steps": Nullable(Int(ge=1)),
        "sample_image": Nullable(STR),
        **_official_only(),
    }


_TYPE_OF_DEFAULT = {bool: BOOL, str: STR}


def derive_schema(defaults: Mapping[str, Any], declared: Mapping[str, Any],
                  prefix: str = "") -> dict:
    """{key: type} of every key of `defaults` (nested for groups): declared, else its default's,
    which only a bool or a str may leave undeclared."""
    unknown = [prefix + key for key in declared if key not in defaults]
    if unknown:
        raise ConfigError(f"Types are declared for {unknown}, which base.yaml lacks.")
    schema = {}
    for key, default in defaults.items():
        if isinstance(default, Mapping):
            schema[key] = derive_schema(default, declared.get(key, {}), prefix + key + ".")
        elif key in declared:
            schema[key] = declared[key]
        elif type(default) in _TYPE_OF_DEFAULT:
            schema[key] = _TYPE_OF_DEFAULT[type(default)]
        else:
            raise ConfigError(f"hparam {prefix + key!r} = {default!r} in base.yaml: declare its "
                              "type (a number with its range) in config.schema.declared_types.")
    return schema


@functools.cache
def schema() -> dict[str, ValueType | dict]:
    """The schema of base.yaml's keys; built once."""
    return derive_schema(read_yaml(HPARAMS_DIR / "base.yaml"), declared_types())
