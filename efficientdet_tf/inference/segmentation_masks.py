"""Segmentation logits -> class masks, at the network input size and at the original image size.

The head's logits (half the stride of `min_level`) are upsampled bilinearly to the network input
size and their argmax taken: the class of each pixel of the pre-processed image, padding included,
which is what evaluation scores. For an original image the part that holds the image (the top left
`preprocess.fitted_size`) is cut out and resized to the image's size, nearest neighbour.
The first step runs on the Keras backend (`keras.ops`), the second in TensorFlow, beside the
pre-processing.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
from keras import ops

from efficientdet_tf import backends
from efficientdet_tf.data.preprocess import fitted_size

SEGMENTATION_MASKS = "segmentation_masks"  # the serving signature's output


def network_input_masks(logits, config):
    """Logits [batch, h, w, classes] -> uint8 class masks [batch, *config.image_size]."""
    logits = ops.image.resize(ops.cast(logits, "float32"), config.image_size,
                              interpolation="bilinear")
    # The lower class on ties: the padding's logits all tie.
    return ops.cast(backends.current().argmax(logits), "uint8")


def image_size_masks(masks: tf.Tensor, height, width, config) -> tf.Tensor:
    """Masks [batch, *config.image_size] of images of `height` x `width` -> uint8 masks
    [batch, height, width]."""
    scaled_size, _ = fitted_size(height, width, config)
    image_part = masks[:, :scaled_size[0], :scaled_size[1], tf.newaxis]
    resized = tf.image.resize(image_part, tf.stack([height, width]),
                              method=tf.image.ResizeMethod.NEAREST_NEIGHBOR)
    return tf.cast(resized[..., 0], tf.uint8)


def with_image_size_masks(outputs: dict, images, config) -> dict:
    """`outputs` of the pre-processed `images`, masks (if any) at the network input size ->
    the same with masks at the size of `images`: [batch, H, W] for a [batch, H, W, 3] batch, a
    list of [H_i, W_i] masks for a list of images (their sizes may differ)."""
    if SEGMENTATION_MASKS not in outputs:
        return outputs
    masks = outputs[SEGMENTATION_MASKS]
    if isinstance(images, Sequence):
        masks = [image_size_masks(masks[i:i + 1], *_height_width(image), config)[0]
                 for i, image in enumerate(images)]
    else:
        masks = image_size_masks(masks, *_height_width(images), config)
    return {**outputs, SEGMENTATION_MASKS: masks}


def _height_width(images) -> tuple[tf.Tensor, tf.Tensor]:
    """Height and width of an image [H, W, 3] or a batch [B, H, W, 3]."""
    shape = tf.shape(images)
    return shape[-3], shape[-2]
