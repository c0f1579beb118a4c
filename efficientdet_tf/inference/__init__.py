"""Inference: the official pre-processing (image in), post-processing (detections out), and the
end-to-end `Detector` that joins them around the network."""

from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.inference.postprocess import MODES, Detections, Postprocessor
from efficientdet_tf.inference.preprocess import preprocess_image, preprocess_images

__all__ = [
    "MODES", "Detections", "Detector", "Postprocessor", "preprocess_image", "preprocess_images",
]
