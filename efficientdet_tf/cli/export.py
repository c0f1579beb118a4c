"""`--mode=export`: a SavedModel (uint8 images in, detections out) and optionally a TFLite file,
an ONNX file and an OpenVINO IR."""

from __future__ import annotations

from absl import flags

from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import usage_errors
from efficientdet_tf.data.pipeline import DATASET_SPECS
from efficientdet_tf.errors import ConfigError
from efficientdet_tf.export.calibration import DEFAULT_CALIBRATION_STEPS
from efficientdet_tf.export.formats import FORMAT_LABELS, export_formats
from efficientdet_tf.export.onnx import ONNX_FILE_NAME, ONNX_INT8_FILE_NAME
from efficientdet_tf.export.openvino import (
    OPENVINO_DIR_NAME,
    OPENVINO_FILE_NAME,
    OPENVINO_INT8_DIR_NAME,
)
from efficientdet_tf.export.tflite import INPUT_LAYOUTS, QUANTIZATIONS
from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.output_files import require_writable_folder

flags.DEFINE_enum("tflite", None, QUANTIZATIONS,
                  "Also write <saved_model_dir>/<tflite>.tflite with this precision.")
flags.DEFINE_enum("tflite_input", "pixels", INPUT_LAYOUTS,
                  "Input of the TFLite file: 'pixels', raw uint8 RGB normalized in the graph (what "
                  "MediaPipe, the Task Library and the mobile apps feed); 'normalized', the "
                  "official automl layout (the normalized image, quantized in int8 files; out "
                  "num_detections, scores, classes, boxes, the official order).")
flags.DEFINE_string("file_pattern", None,
                    f"int8 calibration images: {DATASET_SPECS}.")
flags.DEFINE_integer("num_calibration_steps", DEFAULT_CALIBRATION_STEPS,
                     "Images used for int8 calibration.")
flags.DEFINE_bool("onnx", False,
                  f"Also write <saved_model_dir>/{ONNX_FILE_NAME}: uint8 images in, the "
                  "SavedModel's outputs out, hard NMS (ONNX's NonMaxSuppression) inside.")
flags.DEFINE_enum("onnx_precision", "float32", ("float32", "int8"),
                  f"With --onnx: int8 writes <saved_model_dir>/{ONNX_INT8_FILE_NAME} instead, "
                  "ONNX Runtime's static quantization of the convolutions, calibrated on "
                  "--num_calibration_steps images of --file_pattern.")
flags.DEFINE_bool("onnx_nms", True,
                  "With --onnx: false writes instead the decoded boxes and class scores of every "
                  "anchor before NMS (outputs 'boxes', 'scores'), for TensorRT's EfficientNMS "
                  "plugin or an NMS of your own.")
flags.DEFINE_bool("openvino", False,
                  f"Also write the OpenVINO IR <saved_model_dir>/{OPENVINO_DIR_NAME}/"
                  f"{OPENVINO_FILE_NAME} (and .bin): the SavedModel's interface and NMS.")
flags.DEFINE_enum("openvino_precision", "float32", ("float32", "int8"),
                  f"With --openvino: int8 writes <saved_model_dir>/{OPENVINO_INT8_DIR_NAME}/"
                  f"{OPENVINO_FILE_NAME} instead, NNCF's quantization of the network's "
                  "convolutions, calibrated on --num_calibration_steps images of --file_pattern.")


def run(flag_values) -> None:
    """`export.formats.export_formats` (as `ObjectDetector.export`) of the flags' formats."""
    if not flag_values.saved_model_dir:
        raise ConfigError("--mode=export needs --saved_model_dir, the output directory.")
    if not flag_values.ckpt:
        raise ConfigError("--mode=export needs --ckpt, the checkpoint to export.")
    for name, default, file in (("onnx_nms", True, "onnx"), ("onnx_precision", "float32", "onnx"),
                                ("openvino_precision", "float32", "openvino")):
        value = flag_values[name].value
        if value != default and not flag_values[file].value:
            raise ConfigError(f"--{name}={str(value).lower()} changes the {FORMAT_LABELS[file]} "
                              f"file: give --{file} too.")
    formats = ["saved_model", *([f"tflite_{flag_values.tflite}"] if flag_values.tflite else []),
               *(_precise_format(file, flag_values[f"{file}_precision"].value)
                 for file in ("onnx", "openvino") if flag_values[file].value)]
    require_writable_folder(flag_values.saved_model_dir, "--saved_model_dir")
    config = config_from_flags(flag_values)
    with usage_errors():
        detector = Detector.from_checkpoint(config, flag_values.ckpt, flag_values.postprocess_mode)
        written = export_formats(
            detector, flag_values.saved_model_dir, formats,
            calibration_data=flag_values.file_pattern,
            num_calibration_images=flag_values.num_calibration_steps,
            tflite_input=flag_values.tflite_input, onnx_nms=flag_values.onnx_nms)
    for name, path in written.items():
        print(f"{FORMAT_LABELS[name]} written to {path}")


def _precise_format(file: str, precision: str) -> str:
    """The export format of `file` ('onnx', 'openvino') at `precision` (float32, int8)."""
    return file if precision == "float32" else f"{file}_int8"
