"""The feature network: resampling, weighted fusion nodes and repeated cells (BiFPN and baselines).

Layer names follow the official checkpoints: `fpn_cells/cell_0/fnode1/resample_0_2_6/conv2d`,
`.../fnode1/WSM_1`, `.../fnode1/op_after_combine6/conv`, and `resample_p6` for the extra levels.
"""

from __future__ import annotations

from dataclasses import asdict

import keras
from keras import ops

from efficientdet_tf import backends
from efficientdet_tf.model.fpn_topology import (
    FpnNode,
    FpnTopology,
    from_fpn_config,
    get_topology,
)
from efficientdet_tf.model.initializers import glorot_uniform
from efficientdet_tf.model.layers import (
    CompositeLayer,
    NormSettings,
    activation,
    from_plain,
    recompute_if,
    trace_in_sequence,
)

FAST_FUSION_EPSILON = 1e-4  # fast normalized fusion: relu(w) / (sum(relu(w)) + epsilon)


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class ResampleFeatureMap(CompositeLayer):
    """Brings a feature to a target size and width.

    Width: 1x1 conv (+ BN) only when the channel count differs. Size: max pooling (kernel
    stride+1, TF "same" padding) to go down, nearest-neighbour resizing to go up.
    """

    def __init__(
        self,
        target_size: tuple[int, int],
        filters: int,
        apply_bn: bool,
        conv_after_downsample: bool,
        norm: NormSettings,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.target_size = tuple(target_size)
        self.filters = filters
        self.apply_bn = apply_bn
        self.conv_after_downsample = conv_after_downsample
        self.norm = norm

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        self.projection = self.projection_norm = self.pool = None
        if channels != self.filters:
            self.projection = keras.layers.Conv2D(
                self.filters, 1, padding="same", kernel_initializer=glorot_uniform(),
                name="conv2d")
            if self.apply_bn:
                self.projection_norm = self.norm.make("bn")
        target_height, target_width = self.target_size
        shrinks = height > target_height or width > target_width
        if shrinks and (height < target_height or width < target_width):
            raise ValueError(
                f"{self.name}: cannot resample a {height}x{width} feature to "
                f"{target_height}x{target_width} (one side grows while the other shrinks)."
            )
        if shrinks:
            stride = ((height - 1) // target_height + 1, (width - 1) // target_width + 1)
            self.pool = keras.layers.MaxPooling2D(
                pool_size=(stride[0] + 1, stride[1] + 1), strides=stride, padding="same")
        super().build(input_shape)

    def trace_shapes(self, input_shape, apply):
        project = [self.projection, self.projection_norm]
        if self.pool is None:
            projected = trace_in_sequence(project, input_shape, apply)
            return (projected[0], *self.target_size, projected[-1])  # resized
        order = [self.pool, *project] if self.conv_after_downsample else [*project, self.pool]
        return trace_in_sequence(order, input_shape, apply)

    def _project(self, x, training):
        if self.projection is None:
            return x
        x = self.projection(x)
        return self.projection_norm(x, training=training) if self.projection_norm else x

    def call(self, x, training=None):
        if self.pool is not None:
            if not self.conv_after_downsample:
                x = self._project(x, training)
            x = self.pool(x)
            return self._project(x, training) if self.conv_after_downsample else x
        x = self._project(x, training)
        if tuple(x.shape[1:3]) != self.target_size:
            x = backends.current().resize_nearest(x, self.target_size)
        return x

    def get_config(self):
        return {**super().get_config(), "target_size": list(self.target_size),
                "filters": self.filters, "apply_bn": self.apply_bn,
                "conv_after_downsample": self.conv_after_downsample,
                "norm": self.norm.get_config()}

    @classmethod
    def from_config(cls, config):
        return super().from_config(from_plain(config, norm=NormSettings))


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class FusionNode(CompositeLayer):
    """One fused feature: resample its inputs, fuse them with learned weights, act, conv, BN."""

    def __init__(
        self,
        input_ids: tuple[int, ...],
        num_features: int,
        target_size: tuple[int, int],
        filters: int,
        weight_method: str,
        act_type: str,
        separable_conv: bool,
        apply_bn_for_resampling: bool,
        conv_after_downsample: bool,
        conv_bn_act_pattern: bool,
        norm: NormSettings,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.input_ids = tuple(input_ids)
        self.num_features = num_features
        self.target_size = tuple(target_size)
        self.filters = filters
        self.weight_method = weight_method
        self.act_type = act_type
        self.act = activation(act_type)
        self.separable_conv = separable_conv
        self.apply_bn_for_resampling = apply_bn_for_resampling
        self.conv_after_downsample = conv_after_downsample
        self.conv_bn_act_pattern = conv_bn_act_pattern
        self.norm = norm
        self.resamplers = [
            ResampleFeatureMap(
                target_size, filters, apply_bn_for_resampling, conv_after_downsample, norm,
                name=f"resample_{i}_{input_id}_{num_features}",
            )
            for i, input_id in enumerate(input_ids)
        ]
        # The official layer is named after the number of features that exist before it.
        self.op_after_combine = ConvNorm(
            filters, separable_conv, use_bias=not conv_bn_act_pattern, norm=norm,
            name=f"op_after_combine{num_features}",
        )

    def build(self, input_shape):
        self.edge_weights = []
        if self.weight_method != "sum":
            shape = (self.filters,) if self.weight_method.startswith("channel_") else ()
            self.edge_weights = [
                self.add_weight(shape=shape, initializer="ones", name=f"WSM_{i}" if i else "WSM")
                for i in range(len(self.input_ids))
            ]
        super().build(input_shape)

    def trace_shapes(self, input_shape, apply):
        for resample, input_id in zip(self.resamplers, self.input_ids):
            fused = apply(resample, input_shape[input_id])
        return apply(self.op_after_combine, fused)

    def call(self, features, training=None):
        inputs = [
            resample(features[input_id], training=training)
            for resample, input_id in zip(self.resamplers, self.input_ids)
        ]
        fused = fuse(inputs, self.edge_weights, self.weight_method)
        if not self.conv_bn_act_pattern:
            fused = self.act(fused)
        fused = self.op_after_combine(fused, training=training)
        return self.act(fused) if self.conv_bn_act_pattern else fused

    def get_config(self):
        return {
            **super().get_config(),
            "input_ids": list(self.input_ids),
            "num_features": self.num_features,
            "target_size": list(self.target_size),
            "filters": self.filters,
            "weight_method": self.weight_method,
            "act_type": self.act_type,
            "separable_conv": self.separable_conv,
            "apply_bn_for_resampling": self.apply_bn_for_resampling,
            "conv_after_downsample": self.conv_after_downsample,
            "conv_bn_act_pattern": self.conv_bn_act_pattern,
            "norm": self.norm.get_config(),
        }

    @classmethod
    def from_config(cls, config):
        return super().from_config(from_plain(config, norm=NormSettings))


def fuse(inputs: list, weights: list, method: str):
    """Weighted sum of same-shaped features (EfficientDet paper, section 3.3)."""
    if method not in FUSIONS:
        raise ValueError(f"Unknown fpn_weight_method {method!r}; known: {', '.join(FUSIONS)}.")
    return FUSIONS[method](inputs, [ops.cast(w, inputs[0].dtype) for w in weights])


def _unweighted_sum(inputs: list, weights: list):
    return backends.current().add_n(inputs)


def _softmax_weighted_sum(inputs: list, weights: list):
    normalized = ops.softmax(ops.stack(weights, axis=-1), axis=-1)
    return ops.sum(ops.stack(inputs, axis=-1) * normalized, axis=-1)


def _fast_normalized_sum(inputs: list, weights: list):
    weights = [ops.relu(w) for w in weights]
    add_n = backends.current().add_n
    total = add_n(weights) + FAST_FUSION_EPSILON
    return add_n([x * w / total for x, w in zip(inputs, weights)])


# The fusions by hparam `fpn_weight_method` (the config's schema reads these names); the channel_*
# methods have a weight per channel instead of one per input (`FusionNode`).
FUSIONS = {
    "sum": _unweighted_sum,
    "attn": _softmax_weighted_sum,
    "channel_attn": _softmax_weighted_sum,
    "fastattn": _fast_normalized_sum,
    "channel_fastattn": _fast_normalized_sum,
}


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class ConvNorm(CompositeLayer):
    """3x3 convolution (separable or not) then batch norm, as `conv` and `bn`."""

    def __init__(self, filters: int, separable_conv: bool, use_bias: bool, norm: NormSettings,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters, self.separable_conv, self.use_bias = filters, separable_conv, use_bias
        self.norm_settings = norm
        if separable_conv:
            self.conv = keras.layers.SeparableConv2D(
                filters, 3, padding="same", use_bias=use_bias,
                depthwise_initializer=glorot_uniform(), pointwise_initializer=glorot_uniform(),
                name="conv")
        else:
            self.conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=use_bias,
                                            kernel_initializer=glorot_uniform(), name="conv")
        self.norm = norm.make("bn")

    def trace_shapes(self, input_shape, apply):
        return trace_in_sequence([self.conv, self.norm], input_shape, apply)

    def call(self, x, training=None):
        return self.norm(self.conv(x), training=training)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "separable_conv": self.separable_conv, "use_bias": self.use_bias,
                "norm": self.norm_settings.get_config()}

    @classmethod
    def from_config(cls, config):
        return super().from_config(from_plain(config, norm=NormSettings))


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class FpnCell(CompositeLayer):
    """One repeat of the topology: inputs at levels min..max in, newest feature per level out.

    `fusion` holds the `FusionNode` arguments shared by every node (filters, weight_method, ...,
    norm); `feature_sizes` maps each level to its [height, width]. With `grad_checkpoint`,
    training recomputes the cell's activations in the backward pass.
    """

    def __init__(self, topology: FpnTopology, feature_sizes: dict[int, tuple[int, int]],
                 fusion: dict, grad_checkpoint: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.topology = topology
        self.feature_sizes = {int(level): tuple(size) for level, size in feature_sizes.items()}
        self.fusion = fusion
        self.grad_checkpoint = grad_checkpoint
        self.nodes = [
            FusionNode(
                node.input_ids,
                topology.num_levels + index,
                target_size=self.feature_sizes[node.level],
                **fusion,
                name=f"fnode{index}",
            )
            for index, node in enumerate(topology.nodes)
        ]

    def trace_shapes(self, input_shape, apply):
        shapes = list(input_shape)
        for node in self.nodes:
            shapes.append(apply(node, list(shapes)))
        return [shapes[i] for i in self.topology.output_ids()]

    def call(self, features, training=None):
        def run_nodes(*features):
            features = list(features)
            for node in self.nodes:
                features.append(node(features, training=training))
            return [features[i] for i in self.topology.output_ids()]

        return recompute_if(self.grad_checkpoint and training, run_nodes)(*features)

    def get_config(self):
        return {**super().get_config(),
                **_plain_cell_args(self.topology, self.feature_sizes, self.fusion,
                                   self.grad_checkpoint)}

    @classmethod
    def from_config(cls, config):
        return super().from_config(_cell_args_from_plain(config))


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class FeatureNetwork(CompositeLayer):
    """`cell_repeats` cells of one topology (BiFPN by default); see `FpnCell` for the rest."""

    def __init__(self, topology: FpnTopology, feature_sizes: dict[int, tuple[int, int]],
                 fusion: dict, cell_repeats: int, grad_checkpoint: bool = False, **kwargs):
        super().__init__(name=kwargs.pop("name", "fpn_cells"), **kwargs)
        self.topology, self.feature_sizes, self.fusion = topology, feature_sizes, fusion
        self.cell_repeats, self.grad_checkpoint = cell_repeats, grad_checkpoint
        self.cells = [
            FpnCell(topology, feature_sizes, fusion, grad_checkpoint, name=f"cell_{repeat}")
            for repeat in range(cell_repeats)
        ]

    def trace_shapes(self, input_shape, apply):
        return trace_in_sequence(self.cells, input_shape, apply)

    def call(self, features, training=None):
        for cell in self.cells:
            features = cell(features, training=training)
        return features

    def get_config(self):
        return {**super().get_config(), "cell_repeats": self.cell_repeats,
                **_plain_cell_args(self.topology, self.feature_sizes, self.fusion,
                                   self.grad_checkpoint)}

    @classmethod
    def from_config(cls, config):
        return super().from_config(_cell_args_from_plain(config))


def feature_network(config, feature_sizes: dict[int, tuple[int, int]],
                    norm: NormSettings) -> FeatureNetwork:
    """The feature network the hparams `config` describe: the topology and weight method of
    `config.fpn_config` where set (as the official code), else of fpn_name and fpn_weight_method."""
    custom = config.fpn_config or {}
    fusion = dict(
        filters=config.fpn_num_filters,
        weight_method=custom.get("weight_method") or config.fpn_weight_method,
        act_type=config.act_type,
        separable_conv=config.separable_conv,
        apply_bn_for_resampling=config.apply_bn_for_resampling,
        conv_after_downsample=config.conv_after_downsample,
        conv_bn_act_pattern=config.conv_bn_act_pattern,
        norm=norm,
    )
    return FeatureNetwork(
        _topology(config),
        feature_sizes,
        fusion,
        cell_repeats=config.fpn_cell_repeats,
        grad_checkpoint=config.grad_checkpoint,
    )


def _topology(config) -> FpnTopology:
    if config.fpn_config:
        return from_fpn_config(config.fpn_config, config.min_level, config.max_level)
    return get_topology(config.fpn_name, config.min_level, config.max_level)


def _plain_cell_args(topology, feature_sizes, fusion, grad_checkpoint) -> dict:
    """The arguments of `FpnCell` as plain values for a layer config."""
    return {
        "topology": asdict(topology),
        # JSON object keys are strings: `FpnCell` turns the levels back into ints.
        "feature_sizes": {str(level): list(size) for level, size in feature_sizes.items()},
        "fusion": {**fusion, "norm": fusion["norm"].get_config()},
        "grad_checkpoint": grad_checkpoint,
    }


def _cell_args_from_plain(config: dict) -> dict:
    """`config` with the `FpnCell` arguments of `_plain_cell_args` turned back into objects."""
    topology = config["topology"]
    nodes = tuple(FpnNode(node["level"], tuple(node["input_ids"])) for node in topology["nodes"])
    return {
        **config,
        "topology": FpnTopology(topology["min_level"], topology["max_level"], nodes),
        "fusion": from_plain(config["fusion"], norm=NormSettings),
    }
