"""Inference: the official pre-processing (image in) and post-processing (detections out)."""

from efficientdet_tf.inference.postprocess import MODES, Detections, Postprocessor
from efficientdet_tf.inference.preprocess import preprocess_image, preprocess_images

__all__ = ["MODES", "Detections", "Postprocessor", "preprocess_image", "preprocess_images"]
