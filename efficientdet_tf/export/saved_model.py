"""SavedModel export: uint8 images of any size in, detections and masks out, loadable without
this package.

The `serving_default` signature takes 'images', uint8 [batch, height, width, 3] (one size per
batch, any size), and returns, with the detection head,
  detection_boxes    float32 [batch, max_output_size, 4]: ymin, xmin, ymax, xmax in input pixels;
  detection_scores   float32 [batch, max_output_size];
  detection_classes  float32 [batch, max_output_size]: 1-based class ids;
  num_detections     int32 [batch]: how many rows of each image are detections;
and with the segmentation head
  segmentation_masks uint8 [batch, height, width]: the class of each pixel of the input images.
Pre-processing, network and post-processing are all inside. The `detect_preprocessed` signature is
the same graph after the pre-processing: 'network_inputs' float32 [batch, *image_size, 3] and
'image_scales' float32 [batch] (what `preprocess_images` gives) in, the same outputs out, masks at
the network input size; evaluation feeds it the batches of its input pipeline. Both call one
frozen function (batch norms folded into the convolutions), so the SavedModel holds no variables
and its weights once.

    serve = tf.saved_model.load(export_dir).signatures['serving_default']
    outputs = serve(images=tf.constant(uint8_images))
"""

from __future__ import annotations

import os
from pathlib import Path

import tensorflow as tf

from efficientdet_tf.inference.detector import (
    IMAGES_SPEC,
    PREPROCESSED_SIGNATURE_KEY,
    SIGNATURE_KEY,
    Detector,
    detect_images,
    preprocessed_specs,
)
from efficientdet_tf.inference.fold_batch_norm import FoldedFunction
from efficientdet_tf.output_files import written_whole


def export_saved_model(detector: Detector, export_dir: str | os.PathLike) -> Path:
    """Writes `detector` as a SavedModel to `export_dir` (created if needed)."""
    config = detector.config
    detect = FoldedFunction(detector.preprocessed_function())
    module = tf.Module()
    module.detect_preprocessed = tf.function(detect, input_signature=preprocessed_specs(config))
    module.serve = tf.function(lambda images: detect_images(detect, config, images),
                               input_signature=[IMAGES_SPEC])
    signatures = {
        SIGNATURE_KEY: module.serve.get_concrete_function(),
        PREPROCESSED_SIGNATURE_KEY: module.detect_preprocessed.get_concrete_function(),
    }
    with written_whole(export_dir, "SavedModel") as partial:
        tf.saved_model.save(module, partial, signatures=signatures)
    return Path(export_dir)
