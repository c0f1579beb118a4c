"""The export formats and the files each writes: one loop for `--mode=export` and
`ObjectDetector.export`."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from efficientdet_tf.errors import ConfigError
from efficientdet_tf.export.calibration import DEFAULT_CALIBRATION_STEPS, calibration_pixels
from efficientdet_tf.export.onnx import ONNX_FILE_NAME, ONNX_INT8_FILE_NAME, export_onnx
from efficientdet_tf.export.openvino import (
    OPENVINO_DIR_NAME,
    OPENVINO_FILE_NAME,
    OPENVINO_INT8_DIR_NAME,
    export_openvino,
)
from efficientdet_tf.export.saved_model import export_saved_model
from efficientdet_tf.export.tflite import QUANTIZATIONS, export_tflite
from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.output_files import require_writable_folder

# What `ObjectDetector.export` writes by default: no calibration data needed, no extra installed.
DEFAULT_EXPORT_FORMATS = ("saved_model", "tflite_float32", "tflite_float16")
# The *_int8 formats calibrate on real images; "onnx*" and "openvino*" need the deploy extra.
EXPORT_FORMATS = ("saved_model", *(f"tflite_{q}" for q in QUANTIZATIONS), "onnx", "onnx_int8",
                  "openvino", "openvino_int8")

# How the command line names each format's file when it reports it.
FORMAT_LABELS = {"saved_model": "SavedModel", "onnx": "ONNX", "onnx_int8": "ONNX (int8)",
                 "openvino": "OpenVINO IR", "openvino_int8": "OpenVINO IR (int8)",
                 **{f"tflite_{q}": f"TFLite ({q})" for q in QUANTIZATIONS}}


def export_formats(detector: Detector, directory: str | os.PathLike, formats=DEFAULT_EXPORT_FORMATS,
                   *, calibration_data=None, tflite_input: str = "pixels",
                   num_calibration_images: int = DEFAULT_CALIBRATION_STEPS,
                   onnx_nms: bool = True) -> dict[str, Path]:
    """Writes `detector` in each of `formats`: the SavedModel in `directory`, each TFLite file as
    `directory/<precision>.tflite`, 'onnx' as `directory/model.onnx`, 'onnx_int8' as
    `directory/model_int8.onnx`, 'openvino' as `directory/openvino/model.xml`, 'openvino_int8' as
    `directory/openvino_int8/model.xml`; returns {format: path}.

    The *_int8 formats calibrate on the first `num_calibration_images` of `calibration_data` (a
    dataset spec, source or dataset);
    `tflite_input` is the TFLite input layout ('pixels' or 'normalized', see `export.tflite`);
    `onnx_nms=False` writes the pre-NMS boxes and scores (see `export.onnx`).
    """
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ConfigError(f"Unknown export formats {unknown}; choose from {EXPORT_FORMATS}.")
    calibrated = [name for name in formats if name.endswith("_int8")]
    if calibrated and calibration_data is None:
        verb = "calibrates" if len(calibrated) == 1 else "calibrate"
        raise ConfigError(f"{' and '.join(calibrated)} {verb} on real images: give them "
                          "(--file_pattern, or ObjectDetector.export's representative_data, e.g. "
                          "the training data), or leave int8 out.")
    require_writable_folder(directory, "export directory")
    network, config, directory = detector.network, detector.config, Path(directory)

    @functools.cache
    def calibration():  # read once for the int8 ONNX file and IR
        return calibration_pixels(calibration_data, config, num_calibration_images)

    written = {}
    if "saved_model" in formats:
        written["saved_model"] = Path(export_saved_model(detector, directory))
    for name in (f for f in formats if f.startswith("tflite_")):
        quantization = name.removeprefix("tflite_")
        written[name] = export_tflite(
            network, config, directory / f"{quantization}.tflite", quantization,
            dataset=calibration_data, num_calibration_images=num_calibration_images,
            input_layout=tflite_input)
    if "onnx" in formats:
        written["onnx"] = export_onnx(network, config, directory / ONNX_FILE_NAME, nms=onnx_nms)
    if "onnx_int8" in formats:
        written["onnx_int8"] = export_onnx(
            network, config, directory / ONNX_INT8_FILE_NAME, nms=onnx_nms,
            calibration=calibration())
    if "openvino" in formats:
        written["openvino"] = export_openvino(
            network, config, directory / OPENVINO_DIR_NAME / OPENVINO_FILE_NAME)
    if "openvino_int8" in formats:
        written["openvino_int8"] = export_openvino(
            network, config, directory / OPENVINO_INT8_DIR_NAME / OPENVINO_FILE_NAME,
            calibration=calibration())
    return written
