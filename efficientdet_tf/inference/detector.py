"""End-to-end detection: uint8 images of any size in, detections in original-image pixels out.

    detector = Detector.from_checkpoint(get_config('efficientdet-d0'), 'efficientdet-d0/')
    detections = detector(images)               # uint8 [batch, height, width, 3]
    serve = detector.inference_function()      # the same, compiled: BN folded into the convs

Pre-processing is the official aspect-preserving resize and zero pad (`preprocess`), then the
network, then `Postprocessor` in the chosen NMS mode. Everything is TensorFlow ops, so the same
module runs eagerly, in a `tf.function`, and inside an exported SavedModel.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from efficientdet_tf.config import ConfigError
from efficientdet_tf.data.preprocess import preprocess_images
from efficientdet_tf.inference.fold_batch_norm import FoldedFunction
from efficientdet_tf.inference.postprocess import Detections, Postprocessor
from efficientdet_tf.model.builder import build_model, model_outputs
from efficientdet_tf.model.checkpoint import load_weights

# Output names of the exported serving signature (those of the TF object detection API).
OUTPUT_NAMES = Detections(
    boxes="detection_boxes",
    scores="detection_scores",
    classes="detection_classes",
    num_detections="num_detections",
)
IMAGES_SPEC = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
# The signatures of exported SavedModels: uint8 images in, and the network input (pre-processed).
SIGNATURE_KEY = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
PREPROCESSED_SIGNATURE_KEY = "detect_preprocessed"


def preprocessed_specs(config) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """Specs of `Detector.detect_preprocessed`'s inputs: network inputs and image scales."""
    height, width = config.image_size
    return (
        tf.TensorSpec([None, height, width, 3], tf.float32, name="network_inputs"),
        tf.TensorSpec([None], tf.float32, name="image_scales"),
    )


def detections_to_dict(detections: Detections) -> dict[str, tf.Tensor]:
    """{'detection_boxes': ..., ...}: the serving signature's outputs."""
    return {getattr(OUTPUT_NAMES, field): value for field, value in detections._asdict().items()}


def detections_from_dict(outputs: dict) -> Detections:
    """Inverse of `detections_to_dict`."""
    return Detections(*(outputs[name] for name in OUTPUT_NAMES))


def check_detection_head(config) -> None:
    """Detection, its evaluation and export need the detection head."""
    if "object_detection" not in config.heads:
        raise ConfigError(
            f"heads={list(config.heads)}: detection, COCO evaluation and export need the "
            "object_detection head. A segmentation-only model trains and evaluates (mIoU: "
            "--mode=train_and_eval, --mode=eval --ckpt, ObjectDetector.fit/evaluate); its masks "
            "are not yet served by inference or export.")


class Detector(tf.Module):
    """EfficientDet with the official pre- and post-processing around it.

    Args:
      config: the model's Config.
      model: the network (`build_model(config)`), e.g. a trained one; a new one when None.
      mode: post-processing mode, one of `postprocess.MODES`.
    """

    def __init__(self, config, model: keras.Model | None = None, mode: str = "global"):
        super().__init__(name="detector")
        check_detection_head(config)
        self.config = config
        self.model = build_model(config) if model is None else model
        self.postprocessor = Postprocessor(config, mode)

    @classmethod
    def from_checkpoint(cls, config, checkpoint: str | os.PathLike, mode: str = "global"):
        """A detector with the weights of `checkpoint` (official layout or a training run's)."""
        model = build_model(config)
        load_weights(model, checkpoint)
        return cls(config, model, mode)

    def __call__(self, images) -> Detections:
        """uint8 images [batch, height, width, 3], or a list of [height, width, 3] -> detections."""
        network_inputs, image_scales = preprocess_images(images, self.config)
        return self.detect_preprocessed(network_inputs, image_scales)

    def detect_preprocessed(self, network_inputs, image_scales) -> Detections:
        """Pre-processed images [batch, *config.image_size, 3] and their scales -> detections."""
        outputs = model_outputs(self.config, self.model(network_inputs, training=False))
        return self.postprocessor(outputs.class_outputs, outputs.box_outputs, image_scales)

    def serving_function(self) -> tf.types.experimental.ConcreteFunction:
        """uint8 images [batch, height, width, 3] -> `detections_to_dict`, reading the variables."""
        return tf.function(lambda images: detections_to_dict(self(images))).get_concrete_function(
            IMAGES_SPEC
        )

    def preprocessed_function(self) -> tf.types.experimental.ConcreteFunction:
        """`detect_preprocessed` -> `detections_to_dict`, compiled for any batch size."""
        return tf.function(
            lambda network_inputs, image_scales: detections_to_dict(
                self.detect_preprocessed(network_inputs, image_scales))
        ).get_concrete_function(*preprocessed_specs(self.config))

    def inference_function(self) -> FoldedFunction:
        """`serving_function` frozen with batch norms folded: faster, the weights of now."""
        return FoldedFunction(self.serving_function())
