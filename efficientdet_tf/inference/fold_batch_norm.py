"""Inference-time batch-norm folding: a frozen graph in which every conv -> BN pair is one conv.

In inference mode a batch norm after a convolution is a per-channel affine map `y * s + t` (Keras:
`tf.nn.batch_normalization`, a Mul and an Add in the graph). Folding multiplies the convolution's
filter by `s` per output channel and turns the Mul and the Add into one BiasAdd, which oneDNN fuses
into the convolution. The result is exact up to float rounding. Two identities that would block
oneDNN from fusing the activation too are read through: IdentityN (the marker of swish's custom
gradient) and swish's multiplication by beta = 1.

It works on the graph, not on the Keras model: the training model stays as it is, every layer
structure folds (the heads' convolution shared by levels with one batch norm each included), and a
whole detector function (pre-processing, network, post-processing) folds at once.
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

# Private: a tf.function frozen to a GraphDef whose batch norms can then be folded; TF 2 has no
# public equivalent (tests/test_private_tensorflow_apis.py fails if it goes away).
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2_as_graph,
)

_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2dNative")
_ADDS = ("Add", "AddV2")
# Ops whose value is known once their inputs are: what frozen BN scales and shifts are made of.
_PURE_OPS = {
    "Const", "Identity", "Add", "AddV2", "Sub", "Mul", "RealDiv", "Rsqrt", "Sqrt",
    "Reshape", "Squeeze", "ExpandDims", "Cast", "Neg",
}


class FoldedFunction:
    """A concrete function frozen to constants, with its batch norms folded into convolutions.

    Call it like the concrete function (same inputs, same nested outputs). It holds no variables,
    so later changes to the model's weights do not reach it. `num_folded` counts the folded pairs.
    """

    def __init__(self, function):
        _, graph_def = convert_variables_to_constants_v2_as_graph(function)
        # The function's own arguments come first in `inputs`; captured tensors follow.
        num_arguments = len(tf.nest.flatten(function.structured_input_signature))
        input_names = [tensor.name for tensor in function.inputs[:num_arguments]]
        output_names = [tensor.name for tensor in function.outputs]
        rewriter = _GraphRewriter(graph_def)
        self.num_folded = rewriter.fold_batch_norms()
        self._structured_outputs = function.structured_outputs
        self._function = _import(rewriter.kept_part(output_names), input_names, output_names)

    def __call__(self, *inputs):
        return tf.nest.pack_sequence_as(
            self._structured_outputs, self._function(*inputs), expand_composites=True
        )


def _import(graph_def, input_names: list[str], output_names: list[str]):
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.graph_util.import_graph_def(graph_def, name=""), []
    )
    element = wrapped.graph.as_graph_element
    return wrapped.prune([element(n) for n in input_names], [element(n) for n in output_names])


_Pair = collections.namedtuple("_Pair", "convolution bias_add mul add scale_input shift_input")


class _GraphRewriter:
    """A frozen GraphDef being rewritten in place, with the consumers of each node."""

    def __init__(self, graph_def):
        self.graph_def = graph_def
        self.nodes = {node.name: node for node in graph_def.node}
        self._constant = {}
        self._bypass_identity_n()
        self._bypass_multiplications_by_one()
        self._drop_constant_control_inputs()
        self.consumers = collections.defaultdict(list)
        for node in graph_def.node:
            for name in node.input:
                self.consumers[_node_name(name)].append(node.name)

    def _bypass_identity_n(self) -> None:
        """Reads through IdentityN (custom-gradient markers, e.g. of swish): identity forward."""
        self._bypass({
            node.name: list(node.input) for node in self.graph_def.node if node.op == "IdentityN"
        })

    def _bypass_multiplications_by_one(self) -> None:
        """Reads `x` for `x * 1` (swish's beta): the bare `x * sigmoid(x)` fuses into the conv."""
        bypassed = {}
        for node in self.graph_def.node:
            if node.op == "Mul" and len(node.input) == 2:
                for operand, factor in (node.input, node.input[::-1]):
                    if self._is_scalar_one(factor):
                        bypassed[node.name] = [operand]
        self._bypass(bypassed)

    def _is_scalar_one(self, input_name: str) -> bool:
        node = self.nodes.get(_node_name(input_name))
        if node is None or node.op != "Const":
            return False
        value = tf.make_ndarray(node.attr["value"].tensor)
        return value.ndim == 0 and value.dtype.kind == "f" and value.item() == 1.0

    def _bypass(self, replacements: dict[str, list[str]]) -> None:
        """Makes the users of output k of each node in `replacements` read its k-th source."""
        for node in self.graph_def.node:
            for index, name in enumerate(node.input):
                sources = replacements.get(_node_name(name))
                if sources is not None and not name.startswith("^"):
                    node.input[index] = sources[_output_index(name)]

    def _drop_constant_control_inputs(self) -> None:
        """Control edges from constants order nothing; they would keep dead constants alive."""
        for node in self.graph_def.node:
            kept = [
                name for name in node.input
                if not (name.startswith("^") and self._is_constant(name))
            ]
            if len(kept) != len(node.input):
                del node.input[:]
                node.input.extend(kept)

    # --- finding pairs ------------------------------------------------------------------------

    def find_pairs(self) -> list[_Pair]:
        pairs = [self._pair_ending_at(node) for node in self.graph_def.node if node.op in _ADDS]
        return [pair for pair in pairs if pair is not None]

    def _pair_ending_at(self, add) -> _Pair | None:
        """conv [-> BiasAdd(const)] -> Mul(const) -> Add(const), each step its input's only user."""
        mul, shift_input = self._variable_and_constant_operand(add)
        if mul is None or mul.op != "Mul":
            return None
        producer, scale_input = self._variable_and_constant_operand(mul)
        bias_add = None
        if producer is not None and producer.op == "BiasAdd":
            if not self._is_constant(producer.input[1]):
                return None
            bias_add, producer = producer, self._single_use_producer(producer, producer.input[0])
        if producer is None or producer.op not in _CONVOLUTIONS:
            return None
        if producer.attr["data_format"].s not in (b"", b"NHWC"):
            return None
        if not self._is_constant(producer.input[1]):
            return None
        return _Pair(producer, bias_add, mul, add, scale_input, shift_input)

    def _variable_and_constant_operand(self, node):
        """(producer of the non-constant operand, the constant operand) of a binary op whose
        non-constant operand has no other user; (None, None) otherwise."""
        operands = [name for name in node.input if not name.startswith("^")]
        if len(operands) != 2:
            return None, None
        for variable, constant in (operands, operands[::-1]):
            if self._is_constant(constant) and not self._is_constant(variable):
                return self._single_use_producer(node, variable), constant
        return None, None

    def _single_use_producer(self, node, input_name: str):
        name = _node_name(input_name)
        if _output_index(input_name) != 0 or self.consumers[name] != [node.name]:
            return None
        return self.nodes.get(name)

    def _is_constant(self, input_name: str) -> bool:
        name = _node_name(input_name)
        if name not in self._constant:
            self._constant[name] = False  # guards against cycles (loops in the main graph)
            node = self.nodes.get(name)
            self._constant[name] = (
                node is not None
                and node.op in _PURE_OPS
                and all(self._is_constant(i) for i in node.input if not i.startswith("^"))
            )
        return self._constant[name]

    # --- rewriting ----------------------------------------------------------------------------

    def fold_batch_norms(self) -> int:
        """Folds every pair found; returns how many."""
        pairs = self.find_pairs()
        values = self._evaluate([name for pair in pairs for name in _constant_inputs(pair)])
        per_channel = [pair for pair in pairs if _acts_per_channel(pair, values)]
        for pair in per_channel:
            self._fold(pair, values)
        return len(per_channel)

    def _fold(self, pair: _Pair, values: dict[str, np.ndarray]) -> None:
        convolution = pair.convolution
        kernel = values[convolution.input[1]]
        depthwise = convolution.op == "DepthwiseConv2dNative"
        scale, shift = values[pair.scale_input].reshape(-1), values[pair.shift_input].reshape(-1)
        # A depthwise filter is [kh, kw, in, multiplier]: output channel in * multiplier + m.
        folded_kernel = kernel * (scale.reshape(kernel.shape[2:]) if depthwise else scale)
        bias = shift
        if pair.bias_add is not None:
            bias = values[pair.bias_add.input[1]].reshape(-1) * scale + shift
        convolution.input[1] = self._add_constant(
            convolution.name + "/folded_kernel", folded_kernel.astype(kernel.dtype))
        self._make_bias_add(pair.add, convolution.name, bias)

    def _make_bias_add(self, add, input_name: str, bias: np.ndarray) -> None:
        """Turns the BN's Add into the BiasAdd; it keeps its name, so its users need no change."""
        dtype = tf.dtypes.as_dtype(add.attr["T"].type)
        bias_name = self._add_constant(add.name + "/folded_bias", bias.astype(dtype.as_numpy_dtype))
        del add.input[:]
        add.input.extend([input_name, bias_name])
        add.op = "BiasAdd"
        add.attr.clear()
        add.attr["T"].type = dtype.as_datatype_enum
        add.attr["data_format"].s = b"NHWC"

    def _add_constant(self, name: str, value: np.ndarray) -> str:
        node = self.graph_def.node.add(name=name, op="Const")
        node.attr["dtype"].type = tf.dtypes.as_dtype(value.dtype).as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        self.nodes[name] = node
        return name

    def _evaluate(self, input_names: list[str]) -> dict[str, np.ndarray]:
        """Values of constant tensors, computed by running the constant part of the graph."""
        names = sorted(set(input_names))
        if not names:
            return {}
        wrapped = tf.compat.v1.wrap_function(
            lambda: tf.graph_util.import_graph_def(self.graph_def, name=""), []
        )
        fetches = [wrapped.graph.as_graph_element(_tensor_name(name)) for name in names]
        return {name: value.numpy() for name, value in zip(names, wrapped.prune([], fetches)())}

    def kept_part(self, output_names: list[str]):
        """The GraphDef of the nodes that the outputs depend on (old kernels, BN ops dropped)."""
        needed, pending = set(), [_node_name(name) for name in output_names]
        while pending:
            name = pending.pop()
            if name not in needed:
                needed.add(name)
                pending += [_node_name(i) for i in self.nodes[name].input]
        kept = [node for node in self.graph_def.node if node.name in needed]
        del self.graph_def.node[:]
        self.graph_def.node.extend(kept)
        return self.graph_def


def _acts_per_channel(pair: _Pair, values: dict[str, np.ndarray]) -> bool:
    """Whether the Mul and Add constants are one value per output channel of the convolution."""
    kernel = values[pair.convolution.input[1]]
    depthwise = pair.convolution.op == "DepthwiseConv2dNative"
    channels = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3]
    return all(
        value.size == channels and (value.ndim == 0 or value.shape[-1] == channels)
        for value in (values[pair.scale_input], values[pair.shift_input])
    )


def _constant_inputs(pair: _Pair) -> list[str]:
    names = [pair.scale_input, pair.shift_input, pair.convolution.input[1]]
    if pair.bias_add is not None:
        names.append(pair.bias_add.input[1])
    return names


def _node_name(input_name: str) -> str:
    return input_name.lstrip("^").split(":")[0]


def _output_index(input_name: str) -> int:
    _, _, index = input_name.partition(":")
    return int(index) if index else 0


def _tensor_name(input_name: str) -> str:
    return f"{_node_name(input_name)}:{_output_index(input_name)}"
