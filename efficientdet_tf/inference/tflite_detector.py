"""Running an exported TFLite detection model with LiteRT: uint8 images in, detections out.

The file is one that `export.tflite` writes, of either input layout, told apart by the file's
input tensor: uint8 without quantization parameters takes raw pixels (normalized in the graph);
float32, or uint8 with a scale (int8 files), takes the normalized image of the official export.
This runner does what the TFLite model leaves out: the official pre-processing before it (resize
keeping the aspect ratio, pad), and after it the boxes back to original-image pixels (clipped to
the network input first, as the `global` mode does) and 1-based classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from efficientdet_tf.data.preprocess import preprocess_image, to_pixels
from efficientdet_tf.inference.postprocess import Detections


class TfliteDetector:
    """A TFLite detection file run by LiteRT, called like `Detector` (one image at a time).

    Args:
      path: the .tflite file.
      config: the config the model was exported with (image size, normalization).
      num_threads: LiteRT CPU threads; all cores by default.
    """

    def __init__(self, path: str | os.PathLike, config, num_threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TFLite file {str(path)!r} does not exist.")
        self.config = config
        self.interpreter = Interpreter(
            model_path=str(path), num_threads=num_threads or os.cpu_count())
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._runner = self.interpreter.get_signature_runner()
        self._input_name = next(iter(self._runner.get_input_details()))
        self._check_input_size(path)
        self._preprocess = tf.function(
            lambda image: preprocess_image(image, config),
            input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)],
        )

    def _check_input_size(self, path: Path) -> None:
        _, height, width, _ = self._input["shape"]
        if (height, width) != tuple(self.config.image_size):
            raise ValueError(
                f"TFLite file {path} takes {height}x{width} images but the config's image_size is "
                f"{self.config.image_size[0]}x{self.config.image_size[1]}: give the --model_name / "
                "--hparams the file was exported with."
            )

    @property
    def takes_pixels(self) -> bool:
        """Whether the file takes raw uint8 pixels (True) or the normalized image (False)."""
        scale, _ = self._input["quantization"]
        return self._input["dtype"] == np.uint8 and not scale

    def run(self, network_input: np.ndarray) -> list[np.ndarray]:
        """The TFLite model's outputs (dequantized) for one network input [1, H, W, 3], the
        normalized image that `preprocess_image` makes, whatever the file's input layout."""
        if self.takes_pixels:
            file_input = to_pixels(network_input, self.config).numpy()
        else:
            file_input = self._quantize(network_input)
        outputs = self._runner(**{self._input_name: file_input})
        details = self._runner.get_output_details()
        names = sorted(outputs, key=_output_position)
        return [_dequantize(outputs[name], details[name]) for name in names]

    def _quantize(self, network_input: np.ndarray) -> np.ndarray:
        """The normalized image as the file's input: float32, or quantized (int8 files)."""
        dtype = self._input["dtype"]
        if dtype == np.float32:
            return np.asarray(network_input, np.float32)
        scale, zero_point = self._input["quantization"]
        limits = np.iinfo(dtype)
        quantized = np.round(np.asarray(network_input) / scale + zero_point)
        return np.clip(quantized, limits.min, limits.max).astype(dtype)

    def detect_one(self, image: np.ndarray) -> Detections:
        """One uint8 image [height, width, 3] -> Detections with a batch of 1 (NumPy arrays)."""
        network_input, image_scale = self._preprocess(image)
        return self.detect_preprocessed(network_input[tf.newaxis], image_scale[tf.newaxis])

    def detect_preprocessed(self, network_inputs, image_scales) -> Detections:
        """Pre-processed images [batch, *config.image_size, 3] and their scales [batch] (what
        `preprocess_images` gives) -> NumPy Detections, image by image."""
        network_inputs, image_scales = np.asarray(network_inputs), np.asarray(image_scales)
        return _concatenated([self._detect(network_inputs[i:i + 1], image_scales[i])
                              for i in range(len(network_inputs))])

    def _detect(self, network_input: np.ndarray, image_scale) -> Detections:
        """One network input [1, H, W, 3] and its image scale -> Detections with a batch of 1."""
        boxes, classes, scores, count = self.run(network_input)
        height, width = self.config.image_size
        # Fractions of the network input -> its pixels (clipped to it) -> original pixels.
        boxes = np.clip(boxes, 0.0, 1.0) * np.array([height, width, height, width], np.float32)
        is_detection = np.arange(scores.shape[-1]) < count[:, np.newaxis]
        return Detections(
            boxes=np.where(is_detection[..., None], boxes * image_scale, 0.0),
            scores=np.where(is_detection, scores, 0.0),
            classes=np.where(is_detection, classes + 1.0, 0.0),
            num_detections=count.astype(np.int32),
        )

    def __call__(self, images) -> Detections:
        """uint8 images [batch, height, width, 3] (or a list) -> NumPy Detections, one by one."""
        return _concatenated([self.detect_one(np.asarray(image)) for image in images])


def _concatenated(per_image: list[Detections]) -> Detections:
    return Detections(*(np.concatenate(field) for field in zip(*per_image)))


def _output_position(name: str) -> int:
    """Signature outputs are named output_0, output_1, ... in the function's return order."""
    return int(name.rsplit("_", 1)[-1])


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if value.dtype == np.float32 or not scale:
        return value.astype(np.float32)
    return (value.astype(np.float32) - zero_point) * scale
