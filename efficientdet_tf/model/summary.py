"""Model size and cost: parameter counts and FLOPs counted the way the official tools count them."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

# Private: freezes a tf.function's variables into constants so that tfprof counts a plain graph;
# TF 2 has no public equivalent (tests/test_private_tensorflow_apis.py fails if it goes away).
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

from efficientdet_tf import backends

# tf.nn.batch_normalization's ops. The official graph ran inference batch norm as one fused op,
# which tfprof does not count; Keras 3 lowers it to elementwise ops, left out here to match.
_BATCH_NORM_OPS = r".*/batchnorm/.*"


@dataclass(frozen=True)
class ModelCost:
    total_params: int
    trainable_params: int
    flops: int | None  # multiply-adds for one image; None where not counted (not TensorFlow)

    def describe(self) -> str:
        flops = ("FLOPs: counted on the TensorFlow backend only (KERAS_BACKEND=tensorflow)"
                 if self.flops is None
                 else f"FLOPs (multiply-adds, one image): {self.flops / 1e9:.3f}B")
        return (
            f"Total params: {self.total_params:,}\n"
            f"Trainable params: {self.trainable_params:,}\n"
            f"Non-trainable params: {self.total_params - self.trainable_params:,}\n"
            f"{flops}"
        )


def count_params(weights) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def count_flops(model: keras.Model) -> int:
    """Multiply-adds of one inference pass on one image at the model's input size.

    As the official `model_inspect`: tfprof's float operations of the inference graph, halved
    (tfprof counts a multiply-add as two operations).
    """
    input_shape = [1, *model.inputs[0].shape[1:]]
    forward = tf.function(lambda images: model(images, training=False))
    concrete = forward.get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    options["hide_name_regexes"] = [_BATCH_NORM_OPS]
    profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    return profile.total_float_ops // 2


def model_cost(model: keras.Model) -> ModelCost:
    return ModelCost(
        total_params=count_params(model.weights),
        trainable_params=count_params(model.trainable_weights),
        flops=count_flops(model) if backends.current().traces_tensorflow_graphs else None,
    )
