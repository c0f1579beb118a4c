"""Small building blocks shared by the backbone, the BiFPN and the heads."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

# The activations by hparam `act_type` (the config's schema reads these names), as the official
# `utils.activation_fn` computes them (gelu exact, not its tanh approximation).
ACTIVATIONS = {
    "swish": ops.silu,
    "silu": ops.silu,
    "relu": ops.relu,
    "relu6": ops.relu6,
    "hswish": lambda x: x * ops.relu6(x + 3.0) / 6.0,
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "mish": lambda x: x * ops.tanh(ops.softplus(x)),
}


def activation(name: str):
    """The activation function called `name` in the hparams (`act_type`)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"Unknown act_type {name!r}; known: {', '.join(ACTIVATIONS)}.") from None


@dataclass(frozen=True)
class NormSettings:
    """How every batch norm of a network is made (official: momentum 0.99, epsilon 1e-3)."""

    momentum: float = 0.99
    epsilon: float = 1e-3
    synchronized: bool = False  # sync statistics across replicas (multi-device training)

    def make(self, name: str) -> keras.layers.BatchNormalization:
        return keras.layers.BatchNormalization(
            momentum=self.momentum,
            epsilon=self.epsilon,
            synchronized=self.synchronized,
            name=name,
        )

    def get_config(self) -> dict:
        return asdict(self)


def from_plain(config: dict, **types) -> dict:
    """A saved layer config with the named entries rebuilt from their plain dicts.

    Layers save dataclass arguments (`NormSettings`, specs) as dicts; `from_config` calls this
    with e.g. `norm=NormSettings` to turn them back into the objects the constructor takes.
    """
    return {**config, **{key: kind(**config[key]) for key, kind in types.items()}}


def drop_connect(inputs, survival_prob: float, seed: keras.random.SeedGenerator):
    """Stochastic depth: drops the whole residual branch per example, rescaling the kept ones."""
    noise_shape = (ops.shape(inputs)[0], 1, 1, 1)
    random = survival_prob + keras.random.uniform(noise_shape, dtype=inputs.dtype, seed=seed)
    return inputs / survival_prob * ops.floor(random)


def recompute_if(enabled: bool, function):
    """`function`, or `keras.remat(function)` when `enabled` (the hparam `grad_checkpoint`;
    `tf.recompute_grad` on TensorFlow, `jax.checkpoint` on JAX).

    Recomputed, `function` keeps none of its inner activations for the backward pass but runs
    again there: less memory for more time. It must be deterministic (stochastic depth stays
    outside it), and its batch norms, run twice in training, update their moving statistics
    twice per step, as in the official code.
    """
    return keras.remat(function) if enabled else function


class CompositeLayer(keras.layers.Layer):
    """A layer made of sublayers, whose shapes all follow from its input shape.

    A subclass writes down once how shapes flow through its sublayers, in
    `trace_shapes(input_shape, apply)`: it calls `apply(sublayer, shape)` for the shape each
    sublayer gets and uses the shape that returns. `build` runs that with sublayers being built,
    `compute_output_shape` with shapes only. So Keras neither traces `call` in a scratch graph
    to build the layer nor to learn its output shapes (most of a model's build time otherwise),
    and loading a `.keras` file (which calls `build(input_shape)`) builds everything.
    """

    def trace_shapes(self, input_shape, apply):
        """The output shape for `input_shape`, found by `apply` on each sublayer in turn."""
        raise NotImplementedError(f"{type(self).__name__} must define trace_shapes.")

    def build(self, input_shape):
        self.trace_shapes(input_shape, _build_and_infer)

    def compute_output_shape(self, input_shape):
        return self.trace_shapes(input_shape, _infer)


def _infer(layer: keras.layers.Layer, input_shape):
    return layer.compute_output_shape(input_shape)


def _build_and_infer(layer: keras.layers.Layer, input_shape):
    if not layer.built:
        layer.build(input_shape)
    return layer.compute_output_shape(input_shape)


def trace_in_sequence(layers: list, input_shape, apply):
    """The shape after `layers` (None entries skipped) applied one after the other."""
    for layer in layers:
        if layer is not None:
            input_shape = apply(layer, input_shape)
    return input_shape
