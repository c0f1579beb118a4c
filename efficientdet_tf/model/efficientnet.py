"""EfficientNet B0-B7 and EfficientNet-Lite0-4 (Tan & Le, 2019), as the EfficientDet backbone.

The network is described by data: the B0 block specs and, per model, a width and a depth
multiplier (compound scaling). Layer names follow the official TF checkpoints
(`efficientnet-b0/blocks_3/conv2d/kernel`, `.../tpu_batch_normalization_1/gamma`, ...) so that
official weights load by name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import keras
from keras import ops

from efficientdet_tf.model.initializers import HostVarianceScaling, glorot_uniform
from efficientdet_tf.model.layers import (
    CompositeLayer,
    NormSettings,
    activation,
    drop_connect,
    from_plain,
    recompute_if,
    trace_in_sequence,
)


@dataclass(frozen=True)
class BlockSpec:
    """One stage of MBConv blocks, before scaling."""

    num_repeat: int
    kernel_size: int
    strides: int
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: float | None


# The EfficientNet-B0 stages; lite models use the same stages without squeeze-excitation.
B0_STAGES = (
    BlockSpec(1, 3, 1, 1, 32, 16, 0.25),
    BlockSpec(2, 3, 2, 6, 16, 24, 0.25),
    BlockSpec(2, 5, 2, 6, 24, 40, 0.25),
    BlockSpec(3, 3, 2, 6, 40, 80, 0.25),
    BlockSpec(3, 5, 1, 6, 80, 112, 0.25),
    BlockSpec(4, 5, 2, 6, 112, 192, 0.25),
    BlockSpec(1, 3, 1, 6, 192, 320, 0.25),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEPTH_DIVISOR = 8
DEFAULT_NORM = NormSettings()  # frozen, so one shared default is safe


@dataclass(frozen=True)
class EfficientNetSpec:
    """A named EfficientNet: its compound-scaling coefficients and its lite-ness."""

    name: str
    width_coefficient: float
    depth_coefficient: float
    resolution: int
    dropout_rate: float
    lite: bool = False  # no SE, stem/head width and first/last stage depth not scaled

    @property
    def default_activation(self) -> str:
        return "relu6" if self.lite else "swish"


_SPECS = [
    EfficientNetSpec("efficientnet-b0", 1.0, 1.0, 224, 0.2),
    EfficientNetSpec("efficientnet-b1", 1.0, 1.1, 240, 0.2),
    EfficientNetSpec("efficientnet-b2", 1.1, 1.2, 260, 0.3),
    EfficientNetSpec("efficientnet-b3", 1.2, 1.4, 300, 0.3),
    EfficientNetSpec("efficientnet-b4", 1.4, 1.8, 380, 0.4),
    EfficientNetSpec("efficientnet-b5", 1.6, 2.2, 456, 0.4),
    EfficientNetSpec("efficientnet-b6", 1.8, 2.6, 528, 0.5),
    EfficientNetSpec("efficientnet-b7", 2.0, 3.1, 600, 0.5),
    EfficientNetSpec("efficientnet-lite0", 1.0, 1.0, 224, 0.2, lite=True),
    EfficientNetSpec("efficientnet-lite1", 1.0, 1.1, 240, 0.2, lite=True),
    EfficientNetSpec("efficientnet-lite2", 1.1, 1.2, 260, 0.3, lite=True),
    EfficientNetSpec("efficientnet-lite3", 1.2, 1.4, 280, 0.3, lite=True),
    EfficientNetSpec("efficientnet-lite4", 1.4, 1.8, 300, 0.3, lite=True),
]
EFFICIENTNET_SPECS = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> EfficientNetSpec:
    try:
        return EFFICIENTNET_SPECS[name]
    except KeyError:
        raise ValueError(
            f"Unknown backbone {name!r}; known: {', '.join(EFFICIENTNET_SPECS)}."
        ) from None


def round_filters(filters: int, width_coefficient: float) -> int:
    """Scales a channel count, rounding to a multiple of 8 but never down by more than 10%."""
    scaled = filters * width_coefficient
    rounded = max(DEPTH_DIVISOR, int(scaled + DEPTH_DIVISOR / 2) // DEPTH_DIVISOR * DEPTH_DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += DEPTH_DIVISOR
    return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
    return int(math.ceil(depth_coefficient * repeats))


def scaled_stages(spec: EfficientNetSpec,
                  stages: Sequence[BlockSpec] = B0_STAGES) -> list[BlockSpec]:
    """The (B0) stages after compound scaling (lite: first and last stage keep their depth)."""
    scaled = []
    for index, stage in enumerate(stages):
        fixed_depth = spec.lite and index in (0, len(stages) - 1)
        scaled.append(
            replace(
                stage,
                input_filters=round_filters(stage.input_filters, spec.width_coefficient),
                output_filters=round_filters(stage.output_filters, spec.width_coefficient),
                num_repeat=stage.num_repeat if fixed_depth else round_repeats(
                    stage.num_repeat, spec.depth_coefficient),
                se_ratio=None if spec.lite else stage.se_ratio,
            )
        )
    return scaled


def expand_blocks(stages: list[BlockSpec]) -> list[BlockSpec]:
    """One spec per block: a stage's later blocks take its output as input, with stride 1."""
    blocks = []
    for stage in stages:
        blocks.append(stage)
        blocks += [replace(stage, input_filters=stage.output_filters, strides=1)] * (
            stage.num_repeat - 1
        )
    return blocks


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class SqueezeExcite(CompositeLayer):
    """Channel gating from globally pooled features (reduce 1x1 conv, act, expand, sigmoid)."""

    def __init__(self, reduced_filters: int, filters: int, act_type: str, **kwargs):
        super().__init__(**kwargs)
        self.reduced_filters, self.filters, self.act_type = reduced_filters, filters, act_type
        self.act = activation(act_type)
        self.reduce = keras.layers.Conv2D(
            reduced_filters, 1, kernel_initializer=glorot_uniform(), name="conv2d")
        self.expand = keras.layers.Conv2D(
            filters, 1, kernel_initializer=glorot_uniform(), name="conv2d_1")

    def trace_shapes(self, input_shape, apply):
        squeezed = (input_shape[0], 1, 1, input_shape[-1])
        trace_in_sequence([self.reduce, self.expand], squeezed, apply)
        return tuple(input_shape)

    def call(self, inputs):
        squeezed = ops.mean(inputs, axis=(1, 2), keepdims=True)
        gate = self.expand(self.act(self.reduce(squeezed)))
        return ops.sigmoid(gate) * inputs

    def get_config(self):
        return {**super().get_config(), "reduced_filters": self.reduced_filters,
                "filters": self.filters, "act_type": self.act_type}


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class Stem(CompositeLayer):
    """3x3 stride-2 convolution, batch norm, activation."""

    def __init__(self, filters: int, act_type: str, norm: NormSettings, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.act_type, self.norm_settings = filters, act_type, norm
        self.act = activation(act_type)
        self.conv = keras.layers.Conv2D(
            filters, 3, strides=2, padding="same", use_bias=False,
            kernel_initializer=_conv_initializer(), name="conv2d",
        )
        self.norm = norm.make("tpu_batch_normalization")

    def trace_shapes(self, input_shape, apply):
        return trace_in_sequence([self.conv, self.norm], input_shape, apply)

    def call(self, images, training=None):
        return self.act(self.norm(self.conv(images), training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "act_type": self.act_type,
                "norm": self.norm_settings.get_config()}

    @classmethod
    def from_config(cls, config):
        return super().from_config(from_plain(config, norm=NormSettings))


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class ClassifierHead(CompositeLayer):
    """1x1 convolution to the head width, batch norm, activation, pooling, dropout, dense."""

    def __init__(self, filters: int, num_classes: int, dropout_rate: float, act_type: str,
                 norm: NormSettings, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.num_classes, self.dropout_rate = filters, num_classes, dropout_rate
        self.act_type, self.norm_settings = act_type, norm
        self.act = activation(act_type)
        self.conv = _conv1x1(filters, "conv2d")
        self.norm = norm.make("tpu_batch_normalization")
        self.dropout = keras.layers.Dropout(dropout_rate)
        self.dense = keras.layers.Dense(
            num_classes,
            kernel_initializer=HostVarianceScaling(1.0 / 3.0, mode="fan_out",
                                                   distribution="uniform"),
            name="dense",
        )

    def trace_shapes(self, input_shape, apply):
        features = trace_in_sequence([self.conv, self.norm], input_shape, apply)
        return apply(self.dense, (features[0], features[-1]))  # after pooling

    def call(self, features, training=None):
        x = self.act(self.norm(self.conv(features), training=training))
        x = ops.mean(x, axis=(1, 2))
        return self.dense(self.dropout(x, training=training))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "num_classes": self.num_classes,
                "dropout_rate": self.dropout_rate, "act_type": self.act_type,
                "norm": self.norm_settings.get_config()}

    @classmethod
    def from_config(cls, config):
        return super().from_config(from_plain(config, norm=NormSettings))


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class MBConvBlock(CompositeLayer):
    """Mobile inverted bottleneck: expand 1x1, depthwise kxk, SE, project 1x1, identity skip."""

    def __init__(
        self,
        block: BlockSpec,
        act_type: str,
        norm: NormSettings,
        survival_prob: float | None,
        grad_checkpoint: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.block = block
        self.act_type, self.norm_settings = act_type, norm
        self.act = activation(act_type)
        self.survival_prob = survival_prob
        self.grad_checkpoint = grad_checkpoint
        expanded = block.input_filters * block.expand_ratio
        conv_names = iter(["conv2d", "conv2d_1"])
        norm_names = iter(
            ["tpu_batch_normalization", "tpu_batch_normalization_1", "tpu_batch_normalization_2"]
        )
        self.expand_conv = self.expand_norm = None
        if block.expand_ratio != 1:
            self.expand_conv = _conv1x1(expanded, next(conv_names))
            self.expand_norm = norm.make(next(norm_names))
        self.depthwise_conv = keras.layers.DepthwiseConv2D(
            block.kernel_size,
            strides=block.strides,
            padding="same",
            use_bias=False,
            depthwise_initializer=_conv_initializer(),
            name="depthwise_conv2d",
        )
        self.depthwise_norm = norm.make(next(norm_names))
        self.se = None
        if block.se_ratio:
            reduced = max(1, int(block.input_filters * block.se_ratio))
            self.se = SqueezeExcite(reduced, expanded, act_type, name="se")
        self.project_conv = _conv1x1(block.output_filters, next(conv_names))
        self.project_norm = norm.make(next(norm_names))
        # Stochastic depth draws its drops from this generator's state (a non-trainable
        # variable outside `weights`), so that it runs inside compiled JAX functions too.
        self.drop_seed = keras.random.SeedGenerator() if self._drops_connections else None

    @property
    def has_skip(self) -> bool:
        return self.block.strides == 1 and self.block.input_filters == self.block.output_filters

    @property
    def _drops_connections(self) -> bool:
        return self.has_skip and bool(self.survival_prob)

    def trace_shapes(self, input_shape, apply):
        return trace_in_sequence(
            [self.expand_conv, self.expand_norm, self.depthwise_conv, self.depthwise_norm, self.se,
             self.project_conv, self.project_norm],
            input_shape, apply)

    def call(self, inputs, training=None):
        def body(x):
            if self.expand_conv is not None:
                x = self.act(self.expand_norm(self.expand_conv(x), training=training))
            x = self.act(self.depthwise_norm(self.depthwise_conv(x), training=training))
            if self.se is not None:
                x = self.se(x)
            return self.project_norm(self.project_conv(x), training=training)

        x = recompute_if(self.grad_checkpoint and training, body)(inputs)
        if not self.has_skip:
            return x
        if training and self.survival_prob:
            x = drop_connect(x, self.survival_prob, self.drop_seed)
        return x + inputs

    def get_config(self):
        return {**super().get_config(), "block": asdict(self.block), "act_type": self.act_type,
                "norm": self.norm_settings.get_config(), "survival_prob": self.survival_prob,
                "grad_checkpoint": self.grad_checkpoint}

    @classmethod
    def from_config(cls, config):
        return super().from_config(from_plain(config, block=BlockSpec, norm=NormSettings))


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class EfficientNet(CompositeLayer):
    """EfficientNet as a layer named like the official scope (e.g. `efficientnet-b0`).

    Without top, `call` returns the features at strides 2, 4, 8, 16 and 32 (levels 1-5): the
    output of the last block before each stride-2 block, and of the last block. With
    `include_top`, it returns the classifier logits instead. With `grad_checkpoint`, training
    recomputes each block's activations in the backward pass. `stages` replace the B0 stages
    that the spec scales (the official hparam backbone_config).
    """

    def __init__(
        self,
        spec: EfficientNetSpec | str,
        act_type: str | None = None,
        norm: NormSettings = DEFAULT_NORM,
        survival_prob: float | None = 0.8,
        include_top: bool = False,
        num_classes: int = 1000,
        grad_checkpoint: bool = False,
        stages: Sequence[BlockSpec] = B0_STAGES,
        **kwargs,
    ):
        spec = get_spec(spec) if isinstance(spec, str) else spec
        super().__init__(name=kwargs.pop("name", spec.name), **kwargs)
        self.spec = spec
        act_type = act_type or spec.default_activation
        self.act_type, self.norm_settings, self.survival_prob = act_type, norm, survival_prob
        self.include_top, self.num_classes = include_top, num_classes
        self.grad_checkpoint = grad_checkpoint
        self.stages = tuple(stages)
        stem_filters = STEM_FILTERS if spec.lite else round_filters(
            STEM_FILTERS, spec.width_coefficient)
        self.stem = Stem(stem_filters, act_type, norm, name="stem")
        blocks = expand_blocks(scaled_stages(spec, self.stages))
        self.blocks = [
            MBConvBlock(
                block,
                act_type,
                norm,
                survival_prob=_block_survival_prob(survival_prob, index, len(blocks)),
                grad_checkpoint=grad_checkpoint,
                name=f"blocks_{index}",
            )
            for index, block in enumerate(blocks)
        ]
        # A block ends a level when the next block halves the resolution, or when it is the last.
        self.level_ends = {
            index for index in range(len(blocks))
            if index == len(blocks) - 1 or blocks[index + 1].strides > 1
        }
        self.head = None
        if include_top:
            head_filters = HEAD_FILTERS if spec.lite else round_filters(
                HEAD_FILTERS, spec.width_coefficient)
            self.head = ClassifierHead(
                head_filters, num_classes, spec.dropout_rate, act_type, norm, name="head")

    def trace_shapes(self, input_shape, apply):
        shape = apply(self.stem, input_shape)
        features = []
        for index, block in enumerate(self.blocks):
            shape = apply(block, shape)
            if index in self.level_ends:
                features.append(shape)
        return features if self.head is None else apply(self.head, shape)

    def call(self, images, training=None):
        x = self.stem(images, training=training)
        features = []
        for index, block in enumerate(self.blocks):
            x = block(x, training=training)
            if index in self.level_ends:
                features.append(x)
        if self.head is None:
            return features
        return self.head(x, training=training)

    def get_config(self):
        return {**super().get_config(), "spec": asdict(self.spec), "act_type": self.act_type,
                "norm": self.norm_settings.get_config(), "survival_prob": self.survival_prob,
                "include_top": self.include_top, "num_classes": self.num_classes,
                "grad_checkpoint": self.grad_checkpoint,
                "stages": [asdict(stage) for stage in self.stages]}

    @classmethod
    def from_config(cls, config):
        stages = [BlockSpec(**stage) for stage in config.get("stages", map(asdict, B0_STAGES))]
        return super().from_config(
            {**from_plain(config, spec=EfficientNetSpec, norm=NormSettings), "stages": stages})


def _block_survival_prob(survival_prob: float | None, index: int, num_blocks: int):
    """Stochastic depth grows linearly with depth, to 1 - survival_prob at the last block."""
    if not survival_prob:
        return None
    return 1.0 - (1.0 - survival_prob) * index / num_blocks


def _conv_initializer():
    return HostVarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def _conv1x1(filters: int, name: str) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters, 1, padding="same", use_bias=False, kernel_initializer=_conv_initializer(),
        name=name,
    )


def build_classifier(
    name: str = "efficientnet-b0",
    image_size: int | None = None,
    num_classes: int = 1000,
    survival_prob: float | None = 0.8,
) -> keras.Model:
    """EfficientNet as a standalone image classifier (`include_top`), returning logits."""
    spec = get_spec(name)
    size = image_size or spec.resolution
    images = keras.Input((size, size, 3), name="images")
    logits = EfficientNet(
        spec, survival_prob=survival_prob, include_top=True, num_classes=num_classes
    )(images)
    return keras.Model(images, logits, name=name)
