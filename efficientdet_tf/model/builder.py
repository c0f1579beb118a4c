"""Assembles EfficientDet from a config: backbone -> extra levels -> feature network -> heads.

The network stops at raw head outputs; anchors, losses and decoding live outside it (training/,
inference/), so the same network serves training, evaluation and export.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import keras

from efficientdet_tf.anchors import feature_sizes
from efficientdet_tf.model.bifpn import ResampleFeatureMap, feature_network
from efficientdet_tf.model.efficientnet import B0_STAGES, BlockSpec, EfficientNet
from efficientdet_tf.model.heads import box_head, class_head
from efficientdet_tf.model.layers import NormSettings
from efficientdet_tf.model.segmentation_head import segmentation_head

BACKBONE_MAX_LEVEL = 5  # EfficientNet's deepest feature has stride 2**5


def build_model(config, synchronized_batch_norm: bool = False,
                dtype_policy: str | None = None) -> keras.Model:
    """EfficientDet for `config` at its image size (channels_last), its layers of `dtype_policy`
    (default: Keras's global policy, which stays as it is either way).

    `model(images, training=False)` on normalized float images [B, H, W, 3] returns
    `(class_outputs, box_outputs)`: lists ordered min_level..max_level of
    [B, H_l, W_l, anchors * num_classes] logits and [B, H_l, W_l, anchors * 4] box regressions.
    With the segmentation head in `config.heads` it returns a dict holding the heads present:
    "class_outputs", "box_outputs" and "segmentation_logits" [B, H / 2**(min_level - 1),
    W / 2**(min_level - 1), seg_num_classes]. `model_outputs` reads either form.
    """
    with _global_dtype_policy(dtype_policy):
        return _build_model(config, synchronized_batch_norm)


def _build_model(config, synchronized_batch_norm: bool) -> keras.Model:
    norm = NormSettings(
        momentum=config.batch_norm_momentum,
        epsilon=config.batch_norm_epsilon,
        synchronized=synchronized_batch_norm,
    )
    sizes = dict(enumerate(feature_sizes(config.image_size, config.max_level)))
    images = keras.Input((*config.image_size, 3), name="images")

    backbone = EfficientNet(
        config.backbone_name,
        act_type=config.act_type,
        norm=norm,
        survival_prob=config.backbone_survival_prob,
        grad_checkpoint=config.grad_checkpoint,
        stages=_backbone_stages(config),
    )
    backbone_features = backbone(images)  # levels 1..5
    features = backbone_features[config.min_level - 1:BACKBONE_MAX_LEVEL]
    for level in range(BACKBONE_MAX_LEVEL + 1, config.max_level + 1):
        features.append(
            ResampleFeatureMap(
                sizes[level],
                config.fpn_num_filters,
                apply_bn=config.apply_bn_for_resampling,
                conv_after_downsample=config.conv_after_downsample,
                norm=norm,
                name=f"resample_p{level}",
            )(features[-1])
        )
    features = feature_network(config, sizes, norm)(features)
    outputs = {}
    if "object_detection" in config.heads:
        outputs["class_outputs"] = class_head(config, norm)(features)
        outputs["box_outputs"] = box_head(config, norm)(features)
    if "segmentation" not in config.heads:
        return keras.Model(images, (outputs["class_outputs"], outputs["box_outputs"]),
                           name=config.name)
    outputs["segmentation_logits"] = segmentation_head(config, norm)(features)
    return keras.Model(images, outputs, name=config.name)


def mixed_precision_policy(mixed_precision: bool, accelerator: str) -> str | None:
    """The dtype policy of hparam mixed_precision on an `accelerator` ('tpu', 'gpu', 'cpu'), as
    the official `get_precision`: mixed_bfloat16 on TPU, mixed_float16 on GPU, float32 on CPU
    (bfloat16 made D0's training step slower on a CPU with AMX, see README). None without
    mixed_precision: Keras's global policy."""
    if not mixed_precision:
        return None
    return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(accelerator, "float32")


@contextlib.contextmanager
def _global_dtype_policy(policy: str | None):
    """Keras layers take the global dtype policy when they are made: `policy` for the block,
    then the user's again."""
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class ModelOutputs(NamedTuple):
    """The outputs of a model from `build_model`, None for a head it lacks."""

    class_outputs: list[Any] | None  # tensors of the Keras backend, one per level
    box_outputs: list[Any] | None
    segmentation_logits: Any | None


def model_outputs(config, outputs) -> ModelOutputs:
    """`outputs` of `build_model(config)` (a detection pair or a dict) as `ModelOutputs`."""
    if "segmentation" not in config.heads:
        class_outputs, box_outputs = outputs
        return ModelOutputs(list(class_outputs), list(box_outputs), None)
    return ModelOutputs(
        outputs.get("class_outputs"), outputs.get("box_outputs"), outputs["segmentation_logits"])


def _backbone_stages(config) -> list[BlockSpec]:
    """The stages of hparam backbone_config (official: its BlockArgs), else EfficientNet-B0's."""
    if not config.backbone_config:
        return list(B0_STAGES)
    return [BlockSpec(**block) for block in config.backbone_config["blocks"]]
