"""The official semantic segmentation head (google/automl efficientdet/tf2 `SegmentationHead`).

From the top feature-network level down: a 3x3 stride-2 transposed conv (no bias), batch norm and
the activation, then concatenation with the next lower level; a last 3x3 stride-2 transposed conv
gives the class logits at half the stride of `min_level` (128x128 for a 512x512 input and P3).

Official names: `segmentation_head/conv2d_transpose{,_1,...}` (Keras' automatic names, the last
one the logits layer) and `segmentation_head/bn_0..`.
"""

from __future__ import annotations

import keras
from keras import ops

from efficientdet_tf.model.initializers import glorot_uniform
from efficientdet_tf.model.layers import (
    CompositeLayer,
    NormSettings,
    activation,
    from_plain,
    trace_in_sequence,
)


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class SegmentationHead(CompositeLayer):
    """Features of levels min..max (list, lowest first) -> logits [B, 2 H_min, 2 W_min, classes]."""

    def __init__(self, num_classes: int, filters: int, num_levels: int, act_type: str,
                 norm: NormSettings, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.filters = filters
        self.num_levels = num_levels
        self.act_type = act_type
        self.act = activation(act_type)
        self.norm_settings = norm
        self.upsamples = [
            _transposed_conv(filters, use_bias=False, index=i) for i in range(num_levels - 1)
        ]
        self.norms = [norm.make(f"bn_{i}") for i in range(num_levels - 1)]
        self.logits = _transposed_conv(num_classes, use_bias=True, index=num_levels - 1)

    def trace_shapes(self, input_shape, apply):
        shape = input_shape[-1]
        for upsample, norm, skip in zip(self.upsamples, self.norms, reversed(input_shape[:-1])):
            shape = trace_in_sequence([upsample, norm], shape, apply)
            shape = (*shape[:-1], shape[-1] + skip[-1])  # concatenated
        return apply(self.logits, shape)

    def call(self, features, training=None):
        x = features[-1]
        for upsample, norm, skip in zip(self.upsamples, self.norms, reversed(features[:-1])):
            x = self.act(norm(upsample(x), training=training))
            x = ops.concatenate([x, skip], axis=-1)
        return self.logits(x)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "filters": self.filters,
            "num_levels": self.num_levels,
            "act_type": self.act_type,
            "norm": self.norm_settings.get_config(),
        }

    @classmethod
    def from_config(cls, config):
        return super().from_config(from_plain(config, norm=NormSettings))


def _transposed_conv(filters: int, use_bias: bool, index: int) -> keras.layers.Conv2DTranspose:
    name = "conv2d_transpose" if index == 0 else f"conv2d_transpose_{index}"
    return keras.layers.Conv2DTranspose(
        filters, 3, strides=2, padding="same", use_bias=use_bias,
        kernel_initializer=glorot_uniform(), name=name)


def segmentation_head(config, norm: NormSettings) -> SegmentationHead:
    return SegmentationHead(
        config.seg_num_classes,
        filters=config.fpn_num_filters,
        num_levels=config.max_level - config.min_level + 1,
        act_type=config.act_type,
        norm=norm,
        name="segmentation_head",
    )
