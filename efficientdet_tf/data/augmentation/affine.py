"""Affine resampling of images as tensorflow-addons' `transform` and `rotate` do it.

The official augmentations (AutoAugment, GridMask) move pixels with tfa; both run TF's
ImageProjectiveTransformV3 op, which core TF still has, so the same op here gives the same pixels.
"""

from __future__ import annotations

import tensorflow as tf


def sample(image: tf.Tensor, sampling: tf.Tensor, fill_value, interpolation: str) -> tf.Tensor:
    """Output pixel (x, y) <- input pixel `sampling` @ (x, y, 1), `fill_value` outside.

    image: [height, width, channels] of any dtype the op takes (an integer image gets the
    interpolated value truncated, as in tfa). sampling: float32 [2, 3].
    interpolation: 'NEAREST' or 'BILINEAR'.
    """
    transform = tf.concat([tf.reshape(sampling, [6]), tf.zeros([2])], axis=0)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform[None],
        output_shape=tf.shape(image)[:2],
        fill_value=float(fill_value),
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )[0]


def rotation(radians, height, width) -> tf.Tensor:
    """The sampling of `tfa.image.rotate` by `radians` about the centre of a height x width image
    (counter-clockwise on screen for positive angles)."""
    radians = tf.cast(radians, tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    last_x, last_y = tf.cast(width, tf.float32) - 1.0, tf.cast(height, tf.float32) - 1.0
    x_offset = (last_x - (cos * last_x - sin * last_y)) / 2.0
    y_offset = (last_y - (sin * last_x + cos * last_y)) / 2.0
    return tf.stack([[cos, -sin, x_offset], [sin, cos, y_offset]])
