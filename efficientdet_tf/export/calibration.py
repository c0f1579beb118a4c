"""Calibration images for int8 files: the first images of the user's data, as the exported files
take them (TFLite's `input_layout`; uint8 pixels for ONNX and OpenVINO)."""

from __future__ import annotations

import numpy as np

from efficientdet_tf.data.pipeline import build_dataset
from efficientdet_tf.data.preprocess import to_pixels
from efficientdet_tf.errors import ConfigError

DEFAULT_CALIBRATION_STEPS = 100


def representative_images(
    dataset, config, num_images: int = DEFAULT_CALIBRATION_STEPS, input_layout: str = "pixels"
):
    """Calibration data for int8: inputs of `input_layout` of the first `num_images` of a dataset
    spec (TFRecord glob, 'coco:<json>:<image_dir>', 'synthetic:...'; see `data.pipeline`)."""
    images = build_dataset(dataset, config, is_training=False, batch_size=1).take(num_images)

    def generate():
        for network_input, _ in images:
            yield [to_pixels(network_input, config) if input_layout == "pixels" else network_input]

    return generate


def calibration_pixels(dataset, config,
                       num_images: int = DEFAULT_CALIBRATION_STEPS) -> list[np.ndarray]:
    """uint8 images [1, height, width, 3] at the network input size, the first `num_images` of
    `dataset`: what the ONNX and OpenVINO quantizers feed the files. A `ConfigError` names a
    dataset that yields none."""
    images = [np.asarray(batch[0])
              for batch in representative_images(dataset, config, num_images, "pixels")()]
    if not images:
        name = dataset if isinstance(dataset, str) else type(dataset).__name__
        raise ConfigError(f"The int8 calibration data {name} yields no images: give images of "
                          "the data the model will see (--file_pattern, or representative_data).")
    return images
