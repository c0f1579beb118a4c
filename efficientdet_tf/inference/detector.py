"""End-to-end inference: uint8 images of any size in, the serving signature's outputs out.

    detector = Detector.from_checkpoint(get_config('efficientdet-d0'), 'efficientdet-d0/')
    outputs = detector(images)          # uint8 [batch, height, width, 3] -> {'detection_boxes': ..}
    serve = detector.inference_function()      # the same, compiled: BN folded into the convs
    run = detector.compiled()                  # compiled for any batch, reading the weights

Every runner of a model, this module's, an exported SavedModel's and a TFLite file's
(`inference.loading`), is an `ImageDetector`: `evaluate`, `--mode=infer` and `predict` take any of
them, and they all go from images to outputs through `detect_images`.

The outputs are a dict keyed by the exported signature's names, those of the heads in the config:
  object_detection: `OUTPUT_NAMES` (the TF object detection API's), detections in original-image
    pixels from `Postprocessor` in the chosen NMS mode;
  segmentation: 'segmentation_masks', uint8 class per pixel [batch, height, width] at the size of
    the images (`segmentation_masks`).
Pre-processing is the official aspect-preserving resize and zero pad (`preprocess`).

On TensorFlow everything is TensorFlow ops, so the same module runs eagerly, in a `tf.function`,
and inside a SavedModel. On the other Keras backends the pre-processing stays TensorFlow (as the
input pipeline), the network and post-processing run on the backend (compiled with `jax.jit` on
JAX), and the outputs are NumPy arrays.
"""

from __future__ import annotations

import os
from typing import Callable, Protocol

import keras
import tensorflow as tf

from efficientdet_tf import backends
from efficientdet_tf.data.preprocess import preprocess_images
from efficientdet_tf.inference.fold_batch_norm import FoldedFunction
from efficientdet_tf.inference.postprocess import Detections, Postprocessor
from efficientdet_tf.inference.segmentation_masks import (
    SEGMENTATION_MASKS,
    network_input_masks,
    with_image_size_masks,
)
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
    """The detections of `outputs` (the serving signature's) as `Detections`."""
    require_outputs(outputs, OUTPUT_NAMES, "detection")
    return Detections(*(outputs[name] for name in OUTPUT_NAMES))


def require_outputs(outputs: dict, names, head: str) -> None:
    """A clear error when `outputs` lack `names`, those of `head` (the config's heads differ
    from the model's)."""
    missing = [name for name in names if name not in outputs]
    if missing:
        raise ValueError(
            f"The model's outputs ({', '.join(outputs)}) lack {', '.join(missing)}: it has no "
            f"{head} head. Give the hparams (heads) it was trained or exported with.")


class ImageDetector(Protocol):
    """A runnable detector: the Keras network's (`Detector`, `CompiledDetector`), an exported
    SavedModel's or a TFLite file's (`inference.loading`)."""

    def __call__(self, images) -> dict:
        """uint8 images [batch, height, width, 3], or a list of [height, width, 3] -> outputs,
        masks at the size of the images (a list of masks for a list of images)."""

    def detect_preprocessed(self, network_inputs, image_scales) -> dict:
        """Pre-processed images [batch, *config.image_size, 3] and their scales [batch] (what
        `preprocess_images` gives, and evaluation's input pipeline) -> outputs, masks at the
        network input size."""


def detect_images(detect_preprocessed: Callable[..., dict], config, images) -> dict:
    """The one way from images to outputs: the official pre-processing (`preprocess_images`),
    `detect_preprocessed`, then the masks back to the size of the images."""
    network_inputs, image_scales = preprocess_images(images, config)
    return with_image_size_masks(
        detect_preprocessed(network_inputs, image_scales), images, config)


class Detector(tf.Module):
    """EfficientDet with the official pre- and post-processing around it.

    Args:
      config: the model's Config.
      network: the network (`build_model(config)`), e.g. a trained one; a new one when None.
      mode: post-processing mode of the detections, one of `postprocess.POSTPROCESS_MODES`.
    """

    def __init__(self, config, network: keras.Model | None = None, mode: str = "global"):
        super().__init__(name="detector")
        self.config = config
        self.network = build_model(config) if network is None else network
        self.postprocessor = (Postprocessor(config, mode) if "object_detection" in config.heads
                              else None)

    @classmethod
    def from_checkpoint(cls, config, checkpoint: str | os.PathLike, mode: str = "global"):
        """A detector with the weights of `checkpoint` (official layout or a training run's)."""
        model = build_model(config)
        load_weights(model, checkpoint)
        return cls(config, model, mode)

    def __call__(self, images) -> dict[str, tf.Tensor]:
        """uint8 images [batch, height, width, 3], or a list of [height, width, 3] -> outputs
        (a list of masks for a list of images)."""
        return detect_images(self.detect_preprocessed, self.config, images)

    def detect_preprocessed(self, network_inputs, image_scales) -> dict[str, tf.Tensor]:
        """Pre-processed images [batch, *config.image_size, 3] and their scales -> outputs, the
        masks at the network input size (padding included): TensorFlow tensors where the
        backend's are TensorFlow's, else NumPy arrays (`Backend.call_on_pipeline_tensors`)."""
        return backends.current().call_on_pipeline_tensors(self._detect_preprocessed,
                                                           network_inputs, image_scales)

    def _detect_preprocessed(self, network_inputs, image_scales) -> dict:
        """`detect_preprocessed` in the backend's tensors."""
        outputs = model_outputs(self.config, self.network(network_inputs, training=False))
        results = {}
        if self.postprocessor is not None:
            results.update(detections_to_dict(self.postprocessor(
                outputs.class_outputs, outputs.box_outputs, image_scales)))
        if outputs.segmentation_logits is not None:
            results[SEGMENTATION_MASKS] = network_input_masks(
                outputs.segmentation_logits, self.config)
        return results

    def serving_function(self) -> tf.types.experimental.ConcreteFunction:
        """uint8 images [batch, height, width, 3] -> outputs, reading the variables."""
        backends.current().require_tensorflow("A TensorFlow serving function (export, benchmark)")
        return tf.function(self.__call__).get_concrete_function(IMAGES_SPEC)

    def preprocessed_function(self) -> tf.types.experimental.ConcreteFunction:
        """`detect_preprocessed`, compiled for any batch size."""
        backends.current().require_tensorflow("A TensorFlow serving function (export, benchmark)")
        return tf.function(self.detect_preprocessed).get_concrete_function(
            *preprocessed_specs(self.config))

    def inference_function(self) -> FoldedFunction:
        """`serving_function` frozen with batch norms folded: faster, the weights of now."""
        return FoldedFunction(self.serving_function())

    def compiled(self) -> CompiledDetector:
        """This detector with `detect_preprocessed` compiled for any batch size."""
        return CompiledDetector(self)


class CompiledDetector:
    """A `Detector` whose `detect_preprocessed` is one compiled function, reading the network's
    weights as they are at each call (training goes on): `Backend.compile_function` (a
    `tf.function` on TensorFlow, `jax.jit` on JAX, which compiles for each new batch size, eager
    on PyTorch).
    """

    def __init__(self, detector: Detector):
        self.config = detector.config
        self.detect_preprocessed = backends.current().compile_function(
            detector._detect_preprocessed, detector.network.variables,
            preprocessed_specs(detector.config))

    def __call__(self, images) -> dict[str, tf.Tensor]:
        return detect_images(self.detect_preprocessed, self.config, images)
