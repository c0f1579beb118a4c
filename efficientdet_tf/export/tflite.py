"""TFLite export: the network and TFLite's detection post-processing op, float32, float16 or int8.

The TFLite model has the interface of the EfficientDet-Lite files on TF Hub, which MediaPipe's
ObjectDetector, the TFLite Task Library and the mobile example apps read unchanged:
  input  'images': uint8 [1, height, width, 3] at config.image_size, raw RGB pixels (an image
         resized keeping its aspect ratio and padded); the graph normalizes them with
         config.mean_rgb / config.stddev_rgb. With input_layout='normalized' (the official automl
         export, for its eval_tflite flow) it takes what `preprocess_image` makes of an image
         instead: float32, quantized with the input tensor's scale and zero point in int8 files.
  outputs (TFLite_Detection_PostProcess's, in this order; the official order, count, scores,
  classes, boxes, with input_layout='normalized': see `inference.tflite_outputs`):
    boxes   float32 [1, tflite_max_detections, 4]: ymin, xmin, ymax, xmax as fractions of the
            network input;
    classes float32 [1, tflite_max_detections]: 0-based class ids;
    scores  float32 [1, tflite_max_detections];
    count   float32 [1]: how many rows are detections.
The op's NMS is TFLite's fast NMS: each anchor keeps its best class, then one class-agnostic hard
NMS with nms_configs.iou_thresh / score_thresh, i.e. the `global` mode with method 'hard'. With
nms_configs.max_nms_inputs > 0 only that many anchors, those with the best class logits, go to the
op (a pre-NMS top-k over anchors: the op keeps one class per anchor anyway).
With the segmentation head, one more output follows (the only one without the detection head):
    segmentation_masks uint8 [1, height, width]: the class of each pixel of the network input.
`export_tflite` embeds TFLite metadata (`export.tflite_metadata`) in detection files: labels,
normalization, output tensors. Files with the segmentation head have none: the metadata's
segmenter layout (per-class scores [1, h, w, classes]) is not this class mask.
`inference.tflite_detector.TfliteDetector` runs either layout with LiteRT.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from efficientdet_tf import backends
from efficientdet_tf.data.preprocess import apply_scale_range, normalize_image
from efficientdet_tf.export.calibration import DEFAULT_CALIBRATION_STEPS, representative_images
from efficientdet_tf.export.tflite_metadata import add_metadata
from efficientdet_tf.inference.postprocess import NmsParameters, Postprocessor
from efficientdet_tf.inference.segmentation_masks import network_input_masks
from efficientdet_tf.inference.tflite_outputs import OFFICIAL_ORDER, TASK_LIBRARY_ORDER
from efficientdet_tf.model.builder import model_outputs
from efficientdet_tf.output_files import write_file

QUANTIZATIONS = ("float32", "float16", "int8")
INPUT_LAYOUTS = ("pixels", "normalized")
# The detection outputs of each input layout's files, in file order.
DETECTION_OUTPUTS = {"pixels": TASK_LIBRARY_ORDER, "normalized": OFFICIAL_ORDER}
DETECTION_POSTPROCESS_OP = "TFLite_Detection_PostProcess"


def tflite_function(
    model, config, input_layout: str = "pixels"
) -> tf.types.experimental.ConcreteFunction:
    """Input [1, H, W, 3] of `input_layout` -> the file's outputs: the NMS op's with the detection
    head (in the order DETECTION_OUTPUTS[input_layout]), then the segmentation mask with that
    head."""
    network = _network(model, config, input_layout)
    detect = (_detections(config, DETECTION_OUTPUTS[input_layout])
              if "object_detection" in config.heads else None)

    @tf.function(input_signature=[_input_spec(config, input_layout)])
    def outputs(images):
        network_outputs = model_outputs(config, network(images))
        results = ()
        if detect is not None:
            results += detect(network_outputs.class_outputs, network_outputs.box_outputs)
        if network_outputs.segmentation_logits is not None:
            results += (network_input_masks(network_outputs.segmentation_logits, config),)
        return results

    return outputs.get_concrete_function()


def _detections(config, order: tuple[str, ...]) -> Callable:
    """Class and box outputs of the levels -> the NMS op's outputs, in `order` (their names)."""
    postprocessor = Postprocessor(config, "global")
    anchors = _center_size_anchors(postprocessor.anchors.boxes, config.image_size)
    nms = _detection_postprocess_op(config)
    max_nms_inputs = min(config.nms_configs.max_nms_inputs, len(postprocessor.anchors))

    def detect(class_outputs, box_outputs):
        logits, box_regressions = postprocessor.merge_levels(class_outputs, box_outputs)
        if max_nms_inputs:
            logits, box_regressions, kept_anchors = _top_anchors(
                logits, box_regressions, anchors, max_nms_inputs)
        else:
            kept_anchors = anchors
        outputs = dict(zip(TASK_LIBRARY_ORDER, nms(box_regressions, tf.sigmoid(logits),
                                                   kept_anchors)))
        return tuple(outputs[name] for name in order)

    return detect


def _top_anchors(logits, box_regressions, anchors, count: int):
    """The `count` anchors with the best class logits (TFLite's NMS keeps one class per anchor)."""
    _, indices = tf.math.top_k(tf.reduce_max(logits, axis=-1), k=count, sorted=False)
    return (
        tf.gather(logits, indices, batch_dims=1),
        tf.gather(box_regressions, indices, batch_dims=1),
        tf.gather(anchors, indices[0]),
    )


def tflite_network_function(
    model, config, input_layout: str = "pixels"
) -> tf.types.experimental.ConcreteFunction:
    """Input [1, H, W, 3] -> the raw class and box outputs of every level (benchmarks)."""
    network = _network(model, config, input_layout)

    @tf.function(input_signature=[_input_spec(config, input_layout)])
    def outputs(images):
        class_outputs, box_outputs = network(images)
        return [*class_outputs, *box_outputs]

    return outputs.get_concrete_function()


def _network(model, config, input_layout: str) -> Callable:
    """The model on inputs of `input_layout`: raw pixels are normalized first, in the graph."""
    _check_input_layout(input_layout)
    if input_layout == "normalized":
        return lambda images: model(images, training=False)
    return lambda pixels: model(apply_scale_range(
        normalize_image(pixels, config.mean_rgb, config.stddev_rgb), config), training=False)


def _input_spec(config, input_layout: str) -> tf.TensorSpec:
    dtype = tf.uint8 if input_layout == "pixels" else tf.float32
    return tf.TensorSpec([1, *config.image_size, 3], dtype, name="images")


def _check_input_layout(input_layout: str) -> None:
    if input_layout not in INPUT_LAYOUTS:
        raise ValueError(f"Unknown TFLite input layout {input_layout!r}: use one of "
                         f"{', '.join(INPUT_LAYOUTS)}.")


def _center_size_anchors(boxes: np.ndarray, image_size) -> tf.Tensor:
    """yxyx anchors in pixels -> [y_center, x_center, height, width] as fractions of the image."""
    height, width = image_size
    normalized = boxes / np.array([height, width, height, width], np.float32)
    ymin, xmin, ymax, xmax = normalized.T
    centers_and_sizes = np.stack([(ymin + ymax) / 2, (xmin + xmax) / 2, ymax - ymin, xmax - xmin])
    return tf.constant(centers_and_sizes.T, tf.float32)


def _detection_postprocess_op(config) -> Callable:
    """A placeholder function that the TFLite converter replaces by TFLite's detection op.

    Box encodings are the network's [ty, tx, th, tw]: the op decodes them against the anchors with
    scales 1, exactly as `anchors.decode_boxes` does.
    """
    nms = NmsParameters.from_config(config.nms_configs, "hard")
    attributes = {
        "max_detections": ("i", config.tflite_max_detections),
        "max_classes_per_detection": ("i", 1),
        "use_regular_nms": ("b", "false"),
        "nms_score_threshold": ("f", nms.score_threshold),
        "nms_iou_threshold": ("f", nms.iou_threshold),
        "y_scale": ("f", 1.0),
        "x_scale": ("f", 1.0),
        "h_scale": ("f", 1.0),
        "w_scale": ("f", 1.0),
        "num_classes": ("i", config.num_classes),
    }
    signature = " ".join(
        [f'name: "{DETECTION_POSTPROCESS_OP}"']
        + [f'attr {{ key: "{key}" value {{ {kind}: {value} }} }}'
           for key, (kind, value) in attributes.items()]
    )

    @tf.function(experimental_implements=signature)
    def detection_postprocess(box_encodings, class_predictions, anchors):
        del box_encodings, class_predictions, anchors  # the converter supplies the computation
        return tuple(tf.constant(0.0, name=name) for name in TASK_LIBRARY_ORDER)

    return detection_postprocess


def convert(
    function: tf.types.experimental.ConcreteFunction,
    model,
    quantization: str = "float32",
    representative_images: Callable[[], Iterator] | None = None,
) -> bytes:
    """A TFLite flatbuffer of a concrete function of `model` from this module.

    int8 is full-integer post-training quantization (TFLite's detection op stays float): it needs
    `representative_images`, a generator function yielding [network input] lists.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown TFLite quantization {quantization!r}: use one of {', '.join(QUANTIZATIONS)}."
        )
    # The converter freezes the variables it can reach from a trackable object; Keras 3 models
    # are not tf.Modules, so a module holds their variables. (Without one, the deprecated path
    # would inline the NMS placeholder instead of replacing it.)
    variables = tf.Module()
    variables.model_variables = [weight.value for weight in model.weights]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], variables)
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if representative_images is None:
            raise ValueError(
                "int8 TFLite export needs representative images for calibration: give a dataset "
                "(--file_pattern / representative_dataset)."
            )
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_images
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        converter.inference_input_type = tf.uint8
    return converter.convert()


def export_tflite(
    model,
    config,
    path: str | os.PathLike,
    quantization: str = "float32",
    dataset=None,
    num_calibration_images: int = DEFAULT_CALIBRATION_STEPS,
    input_layout: str = "pixels",
    metadata: bool = True,
) -> Path:
    """Writes the TFLite model of `model` to `path`; int8 calibrates on `dataset`.

    `metadata=False` leaves out the TFLite metadata (and the need for its writer): for files that
    only this package runs, such as the benchmarks'. Files with the segmentation head have none.
    """
    backends.current().require_tensorflow("TFLite export")
    calibration = None
    if quantization == "int8" and dataset is not None:
        calibration = representative_images(dataset, config, num_calibration_images, input_layout)
    function = tflite_function(model, config, input_layout)
    flatbuffer = convert(function, model, quantization, calibration)
    if metadata and "segmentation" not in config.heads:
        flatbuffer = add_metadata(flatbuffer, config, input_layout)
    return write_file(path, flatbuffer, "TFLite file")
