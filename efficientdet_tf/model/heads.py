"""Class and box prediction heads, shared across levels with a separate batch norm per level.

Official names: `class_net/class-0`, `class_net/class-0-bn-3` (repeat 0, level 3),
`class_net/class-predict`; the box head uses the prefix `box`.
"""

from __future__ import annotations

import math

import keras

from efficientdet_tf.anchors import num_anchors_per_location
from efficientdet_tf.model.initializers import HostRandomNormal, HostVarianceScaling
from efficientdet_tf.model.layers import (
    CompositeLayer,
    NormSettings,
    activation,
    drop_connect,
    from_plain,
    recompute_if,
    trace_in_sequence,
)


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class PredictionHead(CompositeLayer):
    """`repeats` x (conv, per-level BN, act) then a conv to `outputs_per_anchor` x anchors."""

    def __init__(
        self,
        prefix: str,
        outputs_per_location: int,
        filters: int,
        repeats: int,
        levels: list[int],
        act_type: str,
        separable_conv: bool,
        survival_prob: float | None,
        norm: NormSettings,
        bias_initializer="zeros",
        grad_checkpoint: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.prefix = prefix
        self.outputs_per_location = outputs_per_location
        self.filters = filters
        self.repeats = repeats
        self.levels = list(levels)
        self.act_type = act_type
        self.act = activation(act_type)
        self.separable_conv = separable_conv
        self.survival_prob = survival_prob
        self.norm_settings = norm
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.grad_checkpoint = grad_checkpoint
        self.convs = [
            _conv(separable_conv, filters, "zeros", name=f"{prefix}-{i}") for i in range(repeats)
        ]
        # Flat list (Keras tracks layers in flat containers): repeat-major, then level.
        self.norms = [
            norm.make(f"{prefix}-{i}-bn-{level}") for i in range(repeats) for level in levels
        ]
        self.predict = _conv(
            separable_conv, outputs_per_location, self.bias_initializer, name=f"{prefix}-predict")

    def trace_shapes(self, input_shape, apply):
        return [self._trace_level(shape, level, apply)
                for shape, level in zip(input_shape, self.levels)]

    def _trace_level(self, shape, level, apply):
        for i, conv in enumerate(self.convs):
            shape = trace_in_sequence([conv, self._norm(i, level)], shape, apply)
        return apply(self.predict, shape)

    def call(self, features, training=None):
        return [
            self._predict_level(feature, level, training)
            for feature, level in zip(features, self.levels)
        ]

    def _norm(self, repeat: int, level: int) -> keras.layers.BatchNormalization:
        return self.norms[repeat * len(self.levels) + level - self.levels[0]]

    def _predict_level(self, x, level, training):
        for i, conv in enumerate(self.convs):
            norm = self._norm(i, level)
            shortcut = x

            def conv_norm_act(x, conv=conv, norm=norm):
                return self.act(norm(conv(x), training=training))

            x = recompute_if(self.grad_checkpoint and training, conv_norm_act)(x)
            if i > 0 and self.survival_prob:
                if training:
                    x = drop_connect(x, self.survival_prob)
                x = x + shortcut
        return self.predict(x)

    def get_config(self):
        return {
            **super().get_config(),
            "prefix": self.prefix,
            "outputs_per_location": self.outputs_per_location,
            "filters": self.filters,
            "repeats": self.repeats,
            "levels": list(self.levels),
            "act_type": self.act_type,
            "separable_conv": self.separable_conv,
            "survival_prob": self.survival_prob,
            "norm": self.norm_settings.get_config(),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "grad_checkpoint": self.grad_checkpoint,
        }

    @classmethod
    def from_config(cls, config):
        return super().from_config(from_plain(config, norm=NormSettings))


def _conv(separable: bool, filters: int, bias_initializer, name: str):
    if separable:
        return keras.layers.SeparableConv2D(
            filters, 3, padding="same",
            depthwise_initializer=HostVarianceScaling(),
            pointwise_initializer=HostVarianceScaling(),
            bias_initializer=bias_initializer, name=name,
        )
    return keras.layers.Conv2D(
        filters, 3, padding="same",
        kernel_initializer=HostRandomNormal(stddev=0.01),
        bias_initializer=bias_initializer, name=name,
    )


def class_head(config, norm: NormSettings) -> PredictionHead:
    """Logits [B, H, W, anchors * num_classes]; the bias starts at the prior `class_prior_prob`."""
    prior = config.class_prior_prob
    return _head(
        config, norm, "class", config.num_classes,
        bias_initializer=keras.initializers.Constant(-math.log((1 - prior) / prior)),
        name="class_net",
    )


def box_head(config, norm: NormSettings) -> PredictionHead:
    """Box regressions [B, H, W, anchors * 4] (ty, tx, th, tw per anchor)."""
    return _head(config, norm, "box", 4, bias_initializer="zeros", name="box_net")


def _head(config, norm, prefix, outputs_per_anchor, bias_initializer, name):
    return PredictionHead(
        prefix,
        outputs_per_anchor * num_anchors_per_location(config.num_scales, config.aspect_ratios),
        filters=config.fpn_num_filters,
        repeats=config.box_class_repeats,
        levels=list(range(config.min_level, config.max_level + 1)),
        act_type=config.act_type,
        separable_conv=config.separable_conv,
        survival_prob=config.survival_prob,
        norm=norm,
        bias_initializer=bias_initializer,
        grad_checkpoint=config.grad_checkpoint,
        name=name,
    )

