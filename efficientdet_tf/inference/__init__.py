"""Inference: the official post-processing (detections out), and the end-to-end `Detector` that
joins it and the pre-processing (`data.preprocess`) around the network."""

from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.inference.postprocess import POSTPROCESS_MODES, Detections, Postprocessor

__all__ = ["POSTPROCESS_MODES", "Detections", "Detector", "Postprocessor"]
