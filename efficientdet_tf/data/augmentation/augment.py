"""Training geometry and colour of the official EfficientDet input pipeline, in TF ops.

Order (official dataloader): normalize -> random horizontal flip -> scale jitter: resize by a random
factor of the output size, random crop, pad to the output size. Boxes go in normalized [0, 1] and
come out in pixels of the output image, clipped to it; boxes left without area are dropped.
Segmentation masks follow the image through the same flip and transform, sampled nearest-neighbour.
Evaluation resizing is `efficientdet_tf.data.preprocess.preprocess_image`, so that evaluation
sees exactly what inference sees; `fit_transform` gives the matching box transform.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import tensorflow as tf


class ScaleTransform(NamedTuple):
    """Maps the source image onto the output: resize by `scale` to `scaled_size`, crop at `offset`.

    scale: float32 scalar, output pixels per source pixel.
    scaled_size: int32 [2] (height, width) of the resized image.
    offset: int32 [2] (y, x) of the crop window in the resized image.
    """

    scale: tf.Tensor
    scaled_size: tf.Tensor
    offset: tf.Tensor


def flip_horizontal(image: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirrors the image left-right and the normalized boxes with it."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    return tf.image.flip_left_right(image), tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def random_flip_horizontal(
    image: tf.Tensor, boxes: tf.Tensor, mask: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """`flip_horizontal` with probability 1/2; the segmentation mask [H, W], when given, with it."""
    def flipped():
        flipped_image, flipped_boxes = flip_horizontal(image, boxes)
        if mask is None:
            return flipped_image, flipped_boxes
        return flipped_image, flipped_boxes, tf.reverse(mask, axis=[1])

    unchanged = (image, boxes) if mask is None else (image, boxes, mask)
    image, boxes, *mask = tf.cond(tf.random.uniform([]) < 0.5, flipped, lambda: unchanged)
    return image, boxes, (mask[0] if mask else None)


def _image_size(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.shape(image)[:2], tf.float32)


def _scaled_size(image: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    # Truncated like the official code; at least one pixel for extreme aspect ratios.
    return tf.maximum(tf.cast(_image_size(image) * scale, tf.int32), 1)


def fit_transform(image: tf.Tensor, output_size: Sequence[int]) -> ScaleTransform:
    """Aspect-preserving resize so the image fits `output_size`, no crop (evaluation)."""
    scale = tf.reduce_min(tf.constant(output_size, tf.float32) / _image_size(image))
    return ScaleTransform(scale, _scaled_size(image, scale), tf.zeros([2], tf.int32))


def random_jitter_transform(
    image: tf.Tensor, output_size: Sequence[int], jitter_min: float, jitter_max: float,
    target_size: Sequence[int] | None = None,
) -> ScaleTransform:
    """Official scale jitter: fit the image into `target_size` (default: `output_size`; the
    official hparam target_size, for training at another size than evaluation) times a factor
    drawn uniformly from [jitter_min, jitter_max], then pick a random crop window of
    `output_size` where it exceeds it."""
    factor = tf.random.uniform([], jitter_min, jitter_max)
    target_size = tf.floor(factor * tf.constant(target_size or output_size, tf.float32))
    scale = tf.reduce_min(target_size / _image_size(image))
    scaled_size = _scaled_size(image, scale)
    slack = tf.cast(tf.maximum(scaled_size - tf.constant(output_size), 0), tf.float32)
    offset = tf.cast(slack * tf.random.uniform([2]), tf.int32)
    return ScaleTransform(scale, scaled_size, offset)


def resize_crop_and_pad(
    image: tf.Tensor, transform: ScaleTransform, output_size: Sequence[int]
) -> tf.Tensor:
    """Bilinear resize to `transform.scaled_size`, crop the output window, zero-pad to full size."""
    image = tf.image.resize(image, transform.scaled_size, method=tf.image.ResizeMethod.BILINEAR)
    image = _crop(image, transform, output_size)
    return tf.image.pad_to_bounding_box(image, 0, 0, output_size[0], output_size[1])


def resize_crop_and_pad_mask(
    mask: tf.Tensor, transform: ScaleTransform, output_size: Sequence[int], padding_value: int
) -> tf.Tensor:
    """A segmentation mask [H, W] through the image's `resize_crop_and_pad`, with nearest-neighbour
    sampling (classes are not blended), padded with `padding_value` (the ignore label)."""
    mask = tf.image.resize(mask[:, :, None], transform.scaled_size,
                           method=tf.image.ResizeMethod.NEAREST_NEIGHBOR)
    mask = _crop(mask[:, :, 0], transform, output_size)
    missing = tf.constant(output_size) - tf.shape(mask)
    mask = tf.pad(mask, [[0, missing[0]], [0, missing[1]]], constant_values=padding_value)
    return tf.ensure_shape(mask, output_size)


def _crop(image: tf.Tensor, transform: ScaleTransform, output_size: Sequence[int]) -> tf.Tensor:
    """The output window of the resized image (smaller where the image does not fill it)."""
    return image[
        transform.offset[0] : transform.offset[0] + output_size[0],
        transform.offset[1] : transform.offset[1] + output_size[1],
    ]


def transform_boxes(
    boxes: tf.Tensor, transform: ScaleTransform, output_size: Sequence[int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """Normalized boxes -> output-pixel boxes clipped to the output, and a mask of boxes with area.

    Clipping is to [0, size - 1], as in the official code.
    """
    scaled_size = tf.cast(tf.tile(transform.scaled_size, [2]), tf.float32)
    offset = tf.cast(tf.tile(transform.offset, [2]), tf.float32)
    limit = tf.cast(tf.tile(tf.constant(output_size) - 1, [2]), tf.float32)
    boxes = tf.clip_by_value(boxes * scaled_size - offset, 0.0, limit)
    has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, has_area
