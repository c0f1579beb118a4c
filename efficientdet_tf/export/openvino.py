"""OpenVINO export: an IR (model.xml and model.bin) with the SavedModel's serving interface.

uint8 images [batch, height, width, 3] in (dynamic batch, any size), the serving signature's
outputs out (see `export.saved_model`), pre-processing and NMS inside. OpenVINO reads the
TensorFlow graph itself, and its NMS op has the soft-NMS of the official post-processing
(`soft_nms_sigma`): the IR runs the config's own NMS, soft (the default) or hard, in the `global`
mode, and gives the checkpoint's detections. Weights stay float32 in the file (OpenVINO would
halve them by default); OpenVINO may still compute in bf16 on CPUs with AMX unless told
INFERENCE_PRECISION_HINT=f32 (`inference.runtime_detector.open_openvino` does by default).
With calibration images, the IR is int8 (`export.openvino_int8`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from efficientdet_tf.export.onnx import serving_function
from efficientdet_tf.export.openvino_int8 import quantized_ir
from efficientdet_tf.inference.runtime_detector import file_metadata, require_module
from efficientdet_tf.output_files import written_whole

OPENVINO_DIR_NAME = "openvino"
OPENVINO_FILE_NAME = "model.xml"
# The int8 IR's folder: its own, so that writing one IR never replaces the other.
OPENVINO_INT8_DIR_NAME = "openvino_int8"


def export_openvino(network, config, path: str | os.PathLike,
                    calibration: list[np.ndarray] | None = None) -> Path:
    """Writes the OpenVINO IR of `network` to `path` (the .xml; the .bin goes beside it). With
    `calibration` (uint8 images, `export.calibration.calibration_pixels`), an int8 IR."""
    openvino = require_module("openvino", "export OpenVINO IRs")
    model = openvino.convert_model(serving_function(network, config).get_concrete_function())
    if calibration is not None:
        model = quantized_ir(model, calibration)
    for key, value in file_metadata(config, config.nms_configs.method).items():
        model.set_rt_info(value, [key])
    path = Path(path)
    with written_whole(path.parent, "OpenVINO IR") as folder:
        openvino.save_model(model, os.path.join(folder, path.name), compress_to_fp16=False)
    return path
