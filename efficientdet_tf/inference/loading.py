"""One way to run any exported or trained detector: `open_detector(path, config)`.

The path picks the runner: a `.tflite` file runs with LiteRT, a `.onnx` file with ONNX Runtime, an
OpenVINO IR's `.xml` with OpenVINO (`runtime_detector`), a SavedModel directory with
`tf.saved_model.load`, anything else is a checkpoint (a prefix, a directory or an official name)
loaded into a new `Detector`, compiled as training's validation compiles it. Each runner is an
`inference.detector.ImageDetector`: it maps uint8 images [batch, height, width, 3] to the serving
signature's outputs (a dict), and has `detect_preprocessed(network_inputs, image_scales)`, which
is what evaluation calls. The command line's eval and infer modes open theirs here too.
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

from efficientdet_tf.errors import ConfigError
from efficientdet_tf.inference.detector import (
    PREPROCESSED_SIGNATURE_KEY,
    SIGNATURE_KEY,
    Detector,
    ImageDetector,
)
from efficientdet_tf.inference.runtime_detector import RuntimeDetector, open_onnx, open_openvino
from efficientdet_tf.inference.tflite_detector import TfliteDetector

# The exported files other than SavedModels, by suffix, and what opens them.
_EXPORTED_FILES = {".tflite": TfliteDetector, ".onnx": open_onnx, ".xml": open_openvino}


class SavedModelDetector:
    """An exported SavedModel's serving signature, called like `Detector`."""

    def __init__(self, export_dir: str | os.PathLike):
        self._loaded = tf.saved_model.load(str(export_dir))
        if SIGNATURE_KEY not in self._loaded.signatures:
            raise ValueError(
                f"SavedModel {str(export_dir)!r} has no {SIGNATURE_KEY!r} signature; export it "
                "with --mode=export."
            )
        self._serve = self._loaded.signatures[SIGNATURE_KEY]
        self._export_dir = str(export_dir)

    def __call__(self, images) -> dict[str, tf.Tensor]:
        return self._serve(images=tf.convert_to_tensor(images, tf.uint8))

    def detect_preprocessed(self, network_inputs, image_scales) -> dict[str, tf.Tensor]:
        """Pre-processed images and their scales (see `Detector`) -> outputs."""
        if PREPROCESSED_SIGNATURE_KEY not in self._loaded.signatures:
            raise ValueError(
                f"SavedModel {self._export_dir!r} has no {PREPROCESSED_SIGNATURE_KEY!r} signature "
                "(it was exported by an older version): export it again with --mode=export."
            )
        detect = self._loaded.signatures[PREPROCESSED_SIGNATURE_KEY]
        expected = detect.structured_input_signature[1]["network_inputs"].shape[1:3]
        if tuple(expected) != tuple(network_inputs.shape[1:3]):
            raise ValueError(
                f"SavedModel {self._export_dir!r} takes {expected[0]}x{expected[1]} network inputs "
                f"but they are {network_inputs.shape[1]}x{network_inputs.shape[2]}: give the "
                "--model_name / --hparams (image_size) it was exported with."
            )
        return detect(network_inputs=network_inputs, image_scales=image_scales)


def open_detector(path: str | os.PathLike, config, mode: str = "global",
                  precision: str = "f32") -> ImageDetector:
    """The runner for `path`: a .tflite, .onnx or OpenVINO .xml file or a SavedModel directory
    (`open_exported`), else a checkpoint (a prefix, a directory holding one, or an official name
    such as 'efficientdet-d0').

    `config` gives the image size and normalization of TFLite files, and builds the model of a
    checkpoint; `mode` is the post-processing of a checkpoint (exported files have theirs inside).
    A checkpoint's network runs as trained (`Detector.compiled`), its batch norms not folded into
    the convolutions: as the official evaluation and `ObjectDetector.evaluate` run it (folding
    changes scores in their last digits, and so the order of near ties). `precision` is an
    OpenVINO IR's (`open_exported`).
    """
    if _is_exported(str(path)):
        return open_exported(path, config, precision)
    _require_float32(precision, path)
    return Detector.from_checkpoint(config, path, mode).compiled()


def open_exported(
    path: str | os.PathLike, config, precision: str = "f32"
) -> SavedModelDetector | TfliteDetector | RuntimeDetector:
    """The runner of an exported file: a .tflite, .onnx or OpenVINO .xml file or a SavedModel
    directory. `precision` ('f32' or 'bf16', `INFERENCE_PRECISIONS`) is what an OpenVINO IR runs
    at; the other files run at their own."""
    path = str(path)
    if not _is_exported(path):
        raise FileNotFoundError(
            f"{path!r} is neither an exported file (.tflite, .onnx, OpenVINO .xml) nor a "
            "SavedModel directory (one holding saved_model.pb, as --mode=export writes); a "
            "checkpoint goes to --ckpt instead."
        )
    suffix = Path(path).suffix
    if suffix == ".xml":
        return open_openvino(path, config, precision)
    _require_float32(precision, path)
    if suffix in _EXPORTED_FILES:
        return _EXPORTED_FILES[suffix](path, config)
    return SavedModelDetector(path)


def _require_float32(precision: str, path) -> None:
    if precision != "f32":
        raise ConfigError(f"Inference precision {precision} is for OpenVINO IRs (.xml); {path} "
                          "runs at its own precision: leave the precision out.")


def _is_exported(path: str) -> bool:
    return Path(path).suffix in _EXPORTED_FILES or tf.saved_model.contains_saved_model(path)
