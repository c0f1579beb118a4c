"""The TensorFlow backend, the reference: tf.distribute strategies, the step under a gradient
tape, and the TensorFlow kernels that exported graphs keep."""

from __future__ import annotations

import tensorflow as tf

from efficientdet_tf.backends import tensorflow_nms
from efficientdet_tf.backends.base import Backend


class TensorFlowBackend(Backend):
    trains = True

    def __init__(self):
        super().__init__("tensorflow")

    # --- inference and kernels ------------------------------------------------------------

    traces_tensorflow_graphs = True

    def resize_nearest(self, features, size):
        """TF1's ResizeNearestNeighbor kernel itself, in float32 as the official code (exported
        graphs convert it to ONNX and OpenVINO as such)."""
        resized = tf.raw_ops.ResizeNearestNeighbor(
            images=tf.cast(features, tf.float32), size=size, align_corners=False,
            half_pixel_centers=False)
        return tf.cast(resized, features.dtype)

    def add_n(self, tensors):
        """One AddN, as the official graph: tf2onnx converts a chain of additions of the
        feature fusions wrongly (the segmentation head's ONNX outputs were off by 15 with it;
        tests/test_deploy.py)."""
        return tf.add_n(tensors)

    def argmax(self, values):
        """tf.argmax: Keras's adds ops for the sign of zeros here, which ONNX and OpenVINO cannot
        convert from exported graphs."""
        return tf.argmax(values, axis=-1, output_type=tf.int32)

    def fused_nms(self):
        """`NonMaxSuppressionV5` and `combined_non_max_suppression` (`tensorflow_nms`)."""
        return tensorflow_nms

    def call_on_pipeline_tensors(self, function, *inputs):
        """`function(*inputs)` itself: TensorFlow ops all the way, so that it traces into a
        `tf.function` and a SavedModel."""
        return function(*inputs)

    def compile_function(self, function, variables, input_specs):
        """A `tf.function`'s concrete function for `input_specs`."""
        return tf.function(function).get_concrete_function(*input_specs)

    def checkpoint_variables(self, variables):
        """The Keras variables themselves: they are TensorFlow's."""
        return dict(variables)
