"""ONNX export (for ONNX Runtime, TensorRT and other runtimes): the SavedModel's serving interface.

The file takes 'images', uint8 [batch, height, width, 3] (dynamic batch, any size), pre-processes
them in the graph as the SavedModel does, and gives with the detection head
  detection_boxes, detection_scores, detection_classes, num_detections: those of the SavedModel
    (see `export.saved_model`), from ONNX's own NonMaxSuppression: hard NMS, the `global` mode,
    whatever nms_configs.method says (soft-NMS has no ONNX op). The detections are those of the
    checkpoint evaluated with --hparams=nms_configs.method=hard;
or with `nms=False` the input of an NMS of the user's own (TensorRT's EfficientNMS plugin):
  boxes   float32 [batch, anchors, 4]: every anchor's decoded box, ymin, xmin, ymax, xmax in input
          pixels (not clipped);
  scores  float32 [batch, anchors, num_classes]: the sigmoid of the class logits;
and with the segmentation head segmentation_masks, uint8 [batch, height, width], as the SavedModel.
The file's metadata (`metadata_props`) records the network input size, heads and NMS, which the
runner (`inference.runtime_detector`) checks against the config it is given.

Converted by tf2onnx from the Keras network (its variables frozen) inside this package's
pre- and post-processing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from efficientdet_tf.anchors import decode_boxes
from efficientdet_tf.data.preprocess import preprocess_images
from efficientdet_tf.inference.detector import IMAGES_SPEC, Detector
from efficientdet_tf.inference.postprocess import Postprocessor
from efficientdet_tf.inference.runtime_detector import (
    PRE_NMS_OUTPUTS,
    file_metadata,
    require_module,
)
from efficientdet_tf.inference.segmentation_masks import (
    SEGMENTATION_MASKS,
    network_input_masks,
    with_image_size_masks,
)
from efficientdet_tf.model.builder import model_outputs
from efficientdet_tf.output_files import write_file

ONNX_FILE_NAME = "model.onnx"
ONNX_INT8_FILE_NAME = "model_int8.onnx"
# 17: what ONNX Runtime, TensorRT >= 8.6 and OpenVINO all read.
OPSET = 17


def hard_nms_config(config):
    """`config` with hard NMS: what the exported files run (and what they are compared with)."""
    return config.override({"nms_configs": {"method": "hard"}})


def serving_function(network, config, nms: bool = True) -> tf.types.experimental.GenericFunction:
    """uint8 images -> the serving outputs of `network` in the `global` mode with the NMS of
    `config` (or the pre-NMS outputs), reading its weights: what the converters convert."""

    @tf.function(input_signature=[IMAGES_SPEC])
    def outputs(images):
        # Built while tracing, so that the anchors are constants of the graph, not captured
        # tensors (which the converters would make inputs).
        if nms:
            return Detector(config, network, "global")(images)
        return pre_nms_outputs(network, config, images)

    return outputs


def pre_nms_outputs(network, config, images) -> dict[str, tf.Tensor]:
    """uint8 images -> every anchor's decoded box in input pixels and class scores (and the
    masks)."""
    network_inputs, image_scales = preprocess_images(images, config)
    outputs = model_outputs(config, network(network_inputs, training=False))
    results = {}
    if outputs.segmentation_logits is not None:
        results[SEGMENTATION_MASKS] = network_input_masks(outputs.segmentation_logits, config)
        results = with_image_size_masks(results, images, config)
    if "object_detection" in config.heads:
        postprocessor = Postprocessor(config)
        logits, box_regressions = postprocessor.merge_levels(
            outputs.class_outputs, outputs.box_outputs)
        boxes = decode_boxes(box_regressions, tf.constant(postprocessor.anchors.boxes))
        boxes_name, scores_name = PRE_NMS_OUTPUTS
        results[boxes_name] = boxes * image_scales[:, tf.newaxis, tf.newaxis]
        results[scores_name] = tf.sigmoid(logits)
    return results


def export_onnx(network, config, path: str | os.PathLike, nms: bool = True,
                calibration: list[np.ndarray] | None = None) -> Path:
    """Writes the ONNX file of `network` (see the module doc) to `path`. With `calibration`
    (uint8 images, `export.calibration.calibration_pixels`), an int8 file (`quantized`)."""
    require_module("tf2onnx", "export ONNX files")
    import tf2onnx  # noqa: PLC0415 (an optional dependency)

    model, _ = tf2onnx.convert.from_function(
        serving_function(network, hard_nms_config(config), nms),
        input_signature=[IMAGES_SPEC], opset=OPSET,
        custom_op_handlers={"StridedSlice": (_strided_slice, [])},
    )
    for key, value in file_metadata(config, "hard" if nms else None).items():
        model.metadata_props.add(key=key, value=value)
    content = model.SerializeToString()
    if calibration is not None:
        content = quantized(content, calibration)
    return write_file(path, content, "ONNX file")


def quantized(model: bytes, calibration: list[np.ndarray]) -> bytes:
    """An int8 ONNX file of float `model`: ONNX Runtime's static quantization of the
    convolutions (QDQ: int8 weights per output channel, uint8 activations whose ranges the
    `calibration` images give). Pre-processing, post-processing and NMS stay float."""
    quantization = require_module("onnxruntime.quantization", "quantize ONNX files")
    # The quantizer logs a line per tensor, and advice, on the root logger: kept off the console.
    with tempfile.TemporaryDirectory() as folder, _root_logging_off():
        float_path, int8_path = Path(folder, "float32.onnx"), Path(folder, "int8.onnx")
        float_path.write_bytes(model)
        quantization.quantize_static(
            str(float_path), str(int8_path), _calibration_reader(quantization, calibration),
            quant_format=quantization.QuantFormat.QDQ, op_types_to_quantize=["Conv"],
            per_channel=True, weight_type=quantization.QuantType.QInt8,
            activation_type=quantization.QuantType.QUInt8)
        return int8_path.read_bytes()


@contextlib.contextmanager
def _root_logging_off():
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _calibration_reader(quantization, images: list[np.ndarray]):
    """ONNX Runtime's calibration reader over `images`, the files' 'images' input."""

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self._images = iter(images)

        def get_next(self):
            image = next(self._images, None)
            return None if image is None else {"images": image}

    return Reader()


def _strided_slice(ctx, node, name, args):
    """tf2onnx's StridedSlice, except `x[..., tf.newaxis]` becomes one Unsqueeze: tf2onnx 1.17
    loses the shape of its own Unsqueeze there and fails on a scalar (the NMS count in the
    post-processing's loop)."""
    del name, args
    from tf2onnx import utils  # noqa: PLC0415
    from tf2onnx.onnx_opset.tensor import StridedSlice  # noqa: PLC0415

    if not _is_new_last_axis(ctx, node):
        StridedSlice.version_13(ctx, node)
        return
    dtype, shape = ctx.get_dtype(node.output[0]), ctx.get_shape(node.output[0])
    ctx.remove_node(node.name)
    axes = ctx.make_const(utils.make_name("last_axis"), np.array([-1], np.int64))
    ctx.make_node("Unsqueeze", [node.input[0], axes.output[0]], outputs=node.output,
                  dtypes=[dtype], shapes=[shape])


def _is_new_last_axis(ctx, node) -> bool:
    """Whether `node` is `x[..., tf.newaxis]`: an ellipsis, then a new axis, nothing else."""
    masks = {key: node.get_attr_value(key, 0) for key in
             ("ellipsis_mask", "new_axis_mask", "shrink_axis_mask")}
    return (masks == {"ellipsis_mask": 1, "new_axis_mask": 2, "shrink_axis_mask": 0}
            and ctx.get_shape(node.input[1]) == [2])
