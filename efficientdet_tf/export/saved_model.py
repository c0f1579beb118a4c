"""SavedModel export: uint8 images of any size in, detections out, loadable without this package.

The `serving_default` signature takes 'images', uint8 [batch, height, width, 3] (one size per
batch, any size), and returns
  detection_boxes    float32 [batch, max_output_size, 4]: ymin, xmin, ymax, xmax in input pixels;
  detection_scores   float32 [batch, max_output_size];
  detection_classes  float32 [batch, max_output_size]: 1-based class ids;
  num_detections     int32 [batch]: how many rows of each image are detections.
Pre-processing, network and post-processing are all inside. The graph is the detector's inference
function: frozen, batch norms folded into the convolutions, so it holds no variables.

    serve = tf.saved_model.load(export_dir).signatures['serving_default']
    detections = serve(images=tf.constant(uint8_images))
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

from efficientdet_tf.inference.detector import IMAGES_SPEC, SIGNATURE_KEY, Detector


def export_saved_model(detector: Detector, export_dir: str | os.PathLike) -> Path:
    """Writes `detector` as a SavedModel to `export_dir` (created if needed)."""
    module = tf.Module()
    module.serve = tf.function(detector.inference_function(), input_signature=[IMAGES_SPEC])
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(
        module, str(export_dir), signatures={SIGNATURE_KEY: module.serve.get_concrete_function()}
    )
    return export_dir
