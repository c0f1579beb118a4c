"""One way to run any exported or trained detector: `open_detector(path, config)`.

The path picks the runner: a `.tflite` file runs with LiteRT, a SavedModel directory with
`tf.saved_model.load`, anything else is a checkpoint (prefix or directory) loaded into a new
`Detector`. Each runner maps uint8 images [batch, height, width, 3] to `Detections`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import tensorflow as tf

from efficientdet_tf.inference.detector import SIGNATURE_KEY, Detector, detections_from_dict
from efficientdet_tf.inference.postprocess import Detections
from efficientdet_tf.inference.tflite_detector import TfliteDetector

DetectFunction = Callable[[object], Detections]


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

    def __call__(self, images) -> Detections:
        return detections_from_dict(self._serve(images=tf.convert_to_tensor(images, tf.uint8)))


def open_detector(path: str | os.PathLike, config, mode: str = "global") -> DetectFunction:
    """The runner for `path`: a .tflite file, a SavedModel directory, or a checkpoint.

    `config` gives the image size and normalization of TFLite files, and builds the model of a
    checkpoint; `mode` is the post-processing of a checkpoint (exported files have theirs inside).
    """
    path = str(path)
    if path.endswith(".tflite"):
        return TfliteDetector(path, config)
    if tf.saved_model.contains_saved_model(path):
        return SavedModelDetector(path)
    if Path(path).is_dir() or tf.io.gfile.exists(path + ".index"):
        detect = Detector.from_checkpoint(config, path, mode).inference_function()
        return lambda images: detections_from_dict(detect(tf.convert_to_tensor(images, tf.uint8)))
    raise FileNotFoundError(
        f"{path!r} is neither a .tflite file, a SavedModel directory nor a checkpoint (a prefix "
        "with a .index file, or a directory holding one)."
    )
