"""Running an exported TFLite model with LiteRT: uint8 images in, detections and masks out.

The file is one that `export.tflite` writes, of either input layout, told apart by the file's
input tensor: uint8 without quantization parameters takes raw pixels (normalized in the graph);
float32, or uint8 with a scale (int8 files), takes the normalized image of the official export.
Their detection outputs come in either order, told apart by the first one's shape (see
`tflite_outputs`).
This runner does what the TFLite model leaves out: the official pre-processing before it (resize
keeping the aspect ratio, pad), and after it the boxes back to original-image pixels (clipped to
the network input first, as the `global` mode does) and 1-based classes, and the masks back to
the images' size.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from efficientdet_tf.data.preprocess import to_pixels
from efficientdet_tf.inference.detector import detect_images, detections_to_dict
from efficientdet_tf.inference.postprocess import Detections
from efficientdet_tf.inference.segmentation_masks import SEGMENTATION_MASKS
from efficientdet_tf.inference.tflite_outputs import output_order_from_shape

_OUTPUT_PREFIX = "output_"


class TfliteDetector:
    """A TFLite file run by LiteRT, called like `Detector` (one image at a time).

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
        self._path = path
        self._check_input_size(path)

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

    @functools.cached_property
    def detection_output_order(self) -> tuple[str, ...]:
        """The names of the file's four detection outputs in file order: the Task Library's
        (boxes first) or the official automl order (count first); see `tflite_outputs`."""
        first = self._runner.get_output_details()[f"{_OUTPUT_PREFIX}0"]["shape"]
        return output_order_from_shape(first)

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

    def detect_preprocessed(self, network_inputs, image_scales) -> dict[str, np.ndarray]:
        """Pre-processed images [batch, *config.image_size, 3] and their scales [batch] (what
        `preprocess_images` gives) -> the outputs of `inference.detector` as NumPy arrays, masks
        at the network input size; image by image."""
        network_inputs, image_scales = np.asarray(network_inputs), np.asarray(image_scales)
        per_image = [self._outputs(network_inputs[i:i + 1], image_scales[i])
                     for i in range(len(network_inputs))]
        return {name: np.concatenate([outputs[name] for outputs in per_image])
                for name in per_image[0]}

    def _outputs(self, network_input: np.ndarray, image_scale) -> dict[str, np.ndarray]:
        """One network input [1, H, W, 3] and its image scale -> outputs with a batch of 1."""
        file_outputs = self.run(network_input)
        self._check_num_outputs(len(file_outputs))
        outputs = {}
        if "object_detection" in self.config.heads:
            named = dict(zip(self.detection_output_order, file_outputs[:4]))
            outputs.update(detections_to_dict(self._detections(**named, image_scale=image_scale)))
        if "segmentation" in self.config.heads:
            outputs[SEGMENTATION_MASKS] = file_outputs[-1].astype(np.uint8)
        return outputs

    def _check_num_outputs(self, found: int) -> None:
        heads = self.config.heads
        expected = 4 * ("object_detection" in heads) + ("segmentation" in heads)
        if found != expected:
            raise ValueError(
                f"TFLite file {self._path} has {found} outputs but a model with "
                f"heads={list(heads)} has {expected}: give the --hparams (heads) the file was "
                "exported with.")

    def _detections(self, boxes, classes, scores, count, image_scale) -> Detections:
        """The NMS op's outputs -> Detections in original-image pixels with 1-based classes."""
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

    def __call__(self, images) -> dict[str, np.ndarray | list[np.ndarray]]:
        """uint8 images [batch, height, width, 3], or a list of [height, width, 3] -> outputs as
        NumPy arrays, masks at the size of the images (a list of masks for a list of images)."""
        outputs = detect_images(self.detect_preprocessed, self.config, images)
        return {name: _numpy(value) for name, value in outputs.items()}

    def detect_one(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """One uint8 image [height, width, 3] -> outputs with a batch of 1."""
        return self(np.asarray(image)[np.newaxis])


def _numpy(value):
    return [np.asarray(item) for item in value] if isinstance(value, list) else np.asarray(value)


def _output_position(name: str) -> int:
    """Signature outputs are named output_0, output_1, ... in the function's return order."""
    return int(name.removeprefix(_OUTPUT_PREFIX))


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if value.dtype == np.float32 or not scale:
        return value.astype(np.float32)
    return (value.astype(np.float32) - zero_point) * scale
