"""Detection AutoAugment (policy v0) and RandAugment of the official EfficientDet, in core TF ops.

[1] Zoph et al., Learning Data Augmentation Strategies for Object Detection, arXiv:1906.11172.

Works on a uint8 [height, width, 3] image with normalized [ymin, xmin, ymax, xmax] boxes, before any
resizing. Geometric operations (translate, shear, rotate) move the boxes with the image by the
official rules, quirks included: boxes move on the integer pixel grid (coordinates truncated to
whole pixels before and after the move), are clipped to the image, and a box left without height
or width (pushed out of the image) gets an extent of 5% of the image at the border it left by
(official `_check_bbox_area`). Solarize thresholds wrap modulo 256, as the official uint8
comparison does.

Operation magnitudes follow the official `level_to_arg`: a level in 0..10 scales each operation's
maximum; the policy table and the constants below are the official ones.
"""

from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

from efficientdet_tf.data.augmentation import affine

_MAX_LEVEL = 10.0
_FILL_VALUE = 128  # Grey for pixels uncovered by translate / shear / rotate / cutout.
_CUTOUT_CONST = 100  # Cutout half-size in pixels at level 10.
_TRANSLATE_CONST = 250  # Image translation in pixels at level 10.
_TRANSLATE_BBOX_CONST = 120  # Translation of content inside a box at level 10.
_ROTATE_MAX_DEGREES = 30.0
_SHEAR_MAX = 0.3
_COLLAPSED_BOX_EXTENT = 0.05  # Official `_check_bbox_area` delta: least extent of a moved box.
_BBOX_ONLY_PROBABILITY_DIVISOR = 3.0  # Official: box-only ops apply to each box with prob / 3.

# Sub-policies of (operation, probability, level); one is drawn per image, its operations applied
# in order, each with its probability.
POLICY_V0 = (
    (("TranslateX_BBox", 0.6, 4), ("Equalize", 0.8, 10)),
    (("TranslateY_Only_BBoxes", 0.2, 2), ("Cutout", 0.8, 8)),
    (("Sharpness", 0.0, 8), ("ShearX_BBox", 0.4, 0)),
    (("ShearY_BBox", 1.0, 2), ("TranslateY_Only_BBoxes", 0.6, 6)),
    (("Rotate_BBox", 0.6, 10), ("Color", 1.0, 6)),
)

# RandAugment as the official dataloader runs it: one operation drawn from these, at level 15.
RANDAUG_OPERATIONS = (
    "Equalize", "Solarize", "Color", "Cutout", "SolarizeAdd",
    "TranslateX_BBox", "TranslateY_BBox", "ShearX_BBox", "ShearY_BBox", "Rotate_BBox",
)
RANDAUG_NUM_LAYERS = 1
RANDAUG_MAGNITUDE = 15

Image = tf.Tensor
Boxes = tf.Tensor


# --- pixel operations ----------------------------------------------------------------------------


def _blend(image1: Image, image2: Image, factor) -> Image:
    """image1 + factor * (image2 - image1), clipped to uint8 (PIL ImageEnhance)."""
    image1, image2 = tf.cast(image1, tf.float32), tf.cast(image2, tf.float32)
    return tf.cast(tf.clip_by_value(image1 + factor * (image2 - image1), 0.0, 255.0), tf.uint8)


def color(image: Image, factor) -> Image:
    """PIL Color: blend with the grayscale image."""
    return _blend(tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image)), image, factor)


def sharpness(image: Image, factor) -> Image:
    """PIL Sharpness: blend with the image smoothed by PIL's SMOOTH kernel (borders kept)."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(
        tf.cast(image, tf.float32)[None], kernel, strides=[1, 1, 1, 1], padding="VALID"
    )[0]
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
    interior = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
    smooth = tf.where(interior, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return _blend(smooth, image, factor)


def equalize(image: Image) -> Image:
    """PIL ImageOps.equalize, per channel."""

    def equalize_channel(channel):
        channel = tf.cast(channel, tf.int32)
        histogram = tf.histogram_fixed_width(channel, [0, 255], nbins=256)
        nonzero = tf.boolean_mask(histogram, histogram > 0)
        step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
        lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], axis=0), 0, 255)
        return tf.where(step > 0, tf.gather(lut, channel), channel)

    channels = [equalize_channel(c) for c in tf.unstack(image, num=3, axis=-1)]
    return tf.cast(tf.stack(channels, axis=-1), tf.uint8)


def solarize(image: Image, threshold: int) -> Image:
    """Inverts pixels at or above `threshold` modulo 256.

    The official `solarize` compares the uint8 image with the threshold as a uint8, so thresholds
    wrap: 256 (level 10) inverts every pixel, 384 (RandAugment's magnitude 15) acts as 128.
    """
    return tf.where(image < tf.constant(threshold % 256, tf.uint8), image, 255 - image)


def solarize_add(image: Image, addition, threshold=128) -> Image:
    """Adds `addition` to pixels below `threshold`, clipped to uint8."""
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(image < threshold, added, image)


def cutout(image: Image, half_size) -> Image:
    """Fills a square of side 2 * half_size (clipped to the image) at a random centre with grey."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    center_y = tf.random.uniform([], 0, height, tf.int32)
    center_x = tf.random.uniform([], 0, width, tf.int32)
    rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
    inside = ((rows >= center_y - half_size) & (rows < center_y + half_size)
              & (cols >= center_x - half_size) & (cols < center_x + half_size))
    return tf.where(inside[:, :, None], tf.constant(_FILL_VALUE, tf.uint8), image)


# --- geometry ------------------------------------------------------------------------------------
# Images move as tfa moves them (nearest, grey outside); boxes by the official rules (see above).


def _sample_image(image: Image, sampling: tf.Tensor) -> Image:
    return affine.sample(image, sampling, _FILL_VALUE, "NEAREST")


def _translation(pixels, horizontal: bool) -> tf.Tensor:
    """Sampling that shifts content by -pixels (left or up), as the official translate."""
    pixels = tf.cast(pixels, tf.float32)
    x_shift, y_shift = (pixels, 0.0) if horizontal else (0.0, pixels)
    return tf.stack([[1.0, 0.0, x_shift], [0.0, 1.0, y_shift]])


def _shear(level, horizontal: bool) -> tf.Tensor:
    level = tf.cast(level, tf.float32)
    if horizontal:
        return tf.stack([[1.0, level, 0.0], [0.0, 1.0, 0.0]])
    return tf.stack([[1.0, 0.0, 0.0], [level, 1.0, 0.0]])


def _image_size(image: Image) -> tuple[tf.Tensor, tf.Tensor]:
    """(height, width) as float32."""
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    return size[0], size[1]


def _truncate(values) -> tf.Tensor:
    """float -> int32 toward zero, then back to float32: the official `tf.to_int32`."""
    return tf.cast(tf.cast(values, tf.int32), tf.float32)


def _pixel_boxes(boxes: Boxes, height, width) -> list[tf.Tensor]:
    """Normalized boxes -> [ymin, xmin, ymax, xmax] whole pixels (truncated), each [N]."""
    return tf.unstack(_truncate(boxes * tf.stack([height, width, height, width])), num=4, axis=-1)


def _widen_collapsed(low, high, delta=_COLLAPSED_BOX_EXTENT):
    """Official `_check_bbox_area` on one axis: where a clipped box has no extent, the upper
    edge is moved to at least `delta` and the lower one to at most 1 - `delta`."""
    collapsed = tf.equal(high - low, 0.0)
    return (tf.where(collapsed, tf.minimum(low, 1.0 - delta), low),
            tf.where(collapsed, tf.maximum(high, delta), high))


def _normalized_boxes(ymin, xmin, ymax, xmax, height, width) -> Boxes:
    """Pixel coordinates -> normalized boxes clipped to the image, collapsed ones widened."""
    ymin, ymax = _widen_collapsed(*(tf.clip_by_value(v / height, 0.0, 1.0) for v in (ymin, ymax)))
    xmin, xmax = _widen_collapsed(*(tf.clip_by_value(v / width, 0.0, 1.0) for v in (xmin, xmax)))
    return tf.stack([ymin, xmin, ymax, xmax], axis=-1)


def _translated_boxes(boxes: Boxes, image: Image, pixels, horizontal: bool) -> Boxes:
    """Official `_shift_bbox`: whole-pixel boxes shifted by -pixels (truncated)."""
    height, width = _image_size(image)
    ymin, xmin, ymax, xmax = _pixel_boxes(boxes, height, width)
    pixels = _truncate(pixels)
    if horizontal:
        xmin, xmax = tf.maximum(0.0, xmin - pixels), tf.minimum(width, xmax - pixels)
    else:
        ymin, ymax = tf.maximum(0.0, ymin - pixels), tf.minimum(height, ymax - pixels)
    return _normalized_boxes(ymin, xmin, ymax, xmax, height, width)


def _enclosing_box(corners_y, corners_x):
    """(ymin, xmin, ymax, xmax) of the [N, 4] corners, each truncated to whole pixels first."""
    corners_y, corners_x = _truncate(corners_y), _truncate(corners_x)
    return (tf.reduce_min(corners_y, 1), tf.reduce_min(corners_x, 1),
            tf.reduce_max(corners_y, 1), tf.reduce_max(corners_x, 1))


def _corners(ymin, xmin, ymax, xmax):
    """[N, 4] y and x of the corners (top-left, top-right, bottom-left, bottom-right)."""
    return (tf.stack([ymin, ymin, ymax, ymax], axis=-1),
            tf.stack([xmin, xmax, xmin, xmax], axis=-1))


def _sheared_boxes(boxes: Boxes, image: Image, level, horizontal: bool) -> Boxes:
    """Official `_shear_bbox`: whole-pixel corners sheared about the top-left image corner."""
    height, width = _image_size(image)
    corners_y, corners_x = _corners(*_pixel_boxes(boxes, height, width))
    level = tf.cast(level, tf.float32)
    if horizontal:
        corners_x = corners_x - level * corners_y
    else:
        corners_y = corners_y - level * corners_x
    return _normalized_boxes(*_enclosing_box(corners_y, corners_x), height, width)


def _rotated_boxes(boxes: Boxes, image: Image, radians) -> Boxes:
    """Official `_rotate_bbox`: corners in whole pixels from the image centre (y up), rotated,
    truncated to whole pixels again."""
    height, width = _image_size(image)
    ymin, xmin, ymax, xmax = tf.unstack(boxes - 0.5, num=4, axis=-1)
    up_min, up_max = -_truncate(height * ymin), -_truncate(height * ymax)
    corners_up, corners_x = _corners(up_min, _truncate(width * xmin), up_max,
                                     _truncate(width * xmax))
    cos, sin = tf.cos(radians), tf.sin(radians)
    rotated_up = cos * corners_up + sin * corners_x
    rotated_x = -sin * corners_up + cos * corners_x
    low_up, low_x, high_up, high_x = _enclosing_box(rotated_up, rotated_x)
    return _normalized_boxes(height / 2.0 - high_up, width / 2.0 + low_x,
                             height / 2.0 - low_up, width / 2.0 + high_x, height, width)


def translate_with_boxes(image: Image, boxes: Boxes, pixels, horizontal: bool):
    """Official `translate_bbox`: content and boxes shifted by -pixels along x or y."""
    return (_sample_image(image, _translation(pixels, horizontal)),
            _translated_boxes(boxes, image, pixels, horizontal))


def shear_with_boxes(image: Image, boxes: Boxes, level, horizontal: bool):
    """Official `shear_with_bboxes`: x -= level * y (horizontal), else y -= level * x."""
    return (_sample_image(image, _shear(level, horizontal)),
            _sheared_boxes(boxes, image, level, horizontal))


def rotate_with_boxes(image: Image, boxes: Boxes, degrees):
    """Official `rotate_with_bboxes`: about the image centre, counter-clockwise for degrees > 0."""
    height, width = _image_size(image)
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    return (_sample_image(image, affine.rotation(radians, height, width)),
            _rotated_boxes(boxes, image, radians))


def _inside_each_box(image: Image, boxes: Boxes, probability, operation) -> Image:
    """Applies `operation` to the content of each box, in random order, each with `probability`."""
    boxes = tf.random.shuffle(boxes)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    size = tf.cast(tf.stack([height, width, height, width]), tf.float32)

    def apply_in_box(image, box):
        ymin, xmin, ymax, xmax = tf.unstack(tf.cast(box * size, tf.int32))
        ymin, xmin = tf.clip_by_value(ymin, 0, height - 1), tf.clip_by_value(xmin, 0, width - 1)
        ymax = tf.clip_by_value(ymax, ymin, height - 1)
        xmax = tf.clip_by_value(xmax, xmin, width - 1)
        content = operation(image[ymin : ymax + 1, xmin : xmax + 1])
        padding = [[ymin, height - 1 - ymax], [xmin, width - 1 - xmax], [0, 0]]
        outside = tf.pad(tf.zeros_like(content, tf.bool), padding, constant_values=True)
        return tf.where(outside, image, tf.pad(content, padding))

    def body(index, image):
        image = tf.cond(
            tf.random.uniform([]) < probability,
            lambda: apply_in_box(image, boxes[index]),
            lambda: image,
        )
        return index + 1, image

    _, image = tf.while_loop(lambda index, _: index < tf.shape(boxes)[0], body, [0, image])
    return image


# --- operations by name --------------------------------------------------------------------------


def _randomly_negate(value):
    return tf.where(tf.random.uniform([]) < 0.5, -value, value)


def _fraction(level) -> float:
    return level / _MAX_LEVEL


def _enhance_factor(level) -> float:
    return _fraction(level) * 1.8 + 0.1


def _translate_level(horizontal: bool):
    def operation(image, boxes, level):
        pixels = _randomly_negate(_fraction(level) * _TRANSLATE_CONST)
        return translate_with_boxes(image, boxes, pixels, horizontal)

    return operation


def _shear_level(horizontal: bool):
    def operation(image, boxes, level):
        shear = _randomly_negate(_fraction(level) * _SHEAR_MAX)
        return shear_with_boxes(image, boxes, shear, horizontal)

    return operation


def _rotate_level(image, boxes, level):
    degrees = _randomly_negate(_fraction(level) * _ROTATE_MAX_DEGREES)
    return rotate_with_boxes(image, boxes, degrees)


def _image_only(operation: Callable[[Image, float], Image]):
    def with_boxes(image, boxes, level):
        return operation(image, level), boxes

    return with_boxes


# Each operation: (image, boxes, level) -> (image, boxes).
_OPERATIONS = {
    "Equalize": _image_only(lambda image, level: equalize(image)),
    "Color": _image_only(lambda image, level: color(image, _enhance_factor(level))),
    "Sharpness": _image_only(lambda image, level: sharpness(image, _enhance_factor(level))),
    "Solarize": _image_only(lambda image, level: solarize(image, int(_fraction(level) * 256))),
    "SolarizeAdd": _image_only(
        lambda image, level: solarize_add(image, int(_fraction(level) * 110))
    ),
    "Cutout": _image_only(
        lambda image, level: cutout(image, int(_fraction(level) * _CUTOUT_CONST))
    ),
    "TranslateX_BBox": _translate_level(horizontal=True),
    "TranslateY_BBox": _translate_level(horizontal=False),
    "ShearX_BBox": _shear_level(horizontal=True),
    "ShearY_BBox": _shear_level(horizontal=False),
    "Rotate_BBox": _rotate_level,
}

# Operations on the content of each box, each box with probability / 3; boxes stay where they are.
_BOX_CONTENT_OPERATIONS = {
    "TranslateY_Only_BBoxes": lambda level: (
        lambda content: _sample_image(
            content,
            _translation(_randomly_negate(_fraction(level) * _TRANSLATE_BBOX_CONST), False),
        )
    ),
}


def apply_operation(name: str, image: Image, boxes: Boxes, probability, level):
    """Runs one named policy operation with `probability`."""
    if name in _BOX_CONTENT_OPERATIONS:
        box_probability = probability / _BBOX_ONLY_PROBABILITY_DIVISOR
        content_operation = _BOX_CONTENT_OPERATIONS[name](level)
        return _inside_each_box(image, boxes, box_probability, content_operation), boxes
    return tf.cond(
        tf.random.uniform([]) < probability,
        lambda: _OPERATIONS[name](image, boxes, level),
        lambda: (image, boxes),
    )


def autoaugment_v0(image: Image, boxes: Boxes) -> tuple[Image, Boxes]:
    """Draws one sub-policy of `POLICY_V0` and applies it."""

    def sub_policy(operations):
        def apply():
            augmented = (image, boxes)
            for name, probability, level in operations:
                augmented = apply_operation(name, *augmented, probability, level)
            return augmented

        return apply

    index = tf.random.uniform([], 0, len(POLICY_V0), tf.int32)
    return tf.switch_case(index, [sub_policy(ops) for ops in POLICY_V0])


def randaugment(image: Image, boxes: Boxes) -> tuple[Image, Boxes]:
    """Official detection RandAugment: `RANDAUG_NUM_LAYERS` random operations at full strength."""
    for _ in range(RANDAUG_NUM_LAYERS):
        index = tf.random.uniform([], 0, len(RANDAUG_OPERATIONS), tf.int32)
        branches = [
            lambda name=name, image=image, boxes=boxes: _OPERATIONS[name](
                image, boxes, RANDAUG_MAGNITUDE)
            for name in RANDAUG_OPERATIONS
        ]
        image, boxes = tf.switch_case(index, branches)
    return image, boxes


# The policies by hparam `autoaugment_policy` (the config's schema reads these names).
POLICIES = {"v0": autoaugment_v0, "randaug": randaugment}


def augment(image: Image, boxes: Boxes, policy: str) -> tuple[Image, Boxes]:
    """Applies the config's `autoaugment_policy`: 'v0' or 'randaug'."""
    if policy not in POLICIES:
        raise ValueError(f"Unknown autoaugment_policy {policy!r}; use one of {sorted(POLICIES)}.")
    image, boxes = POLICIES[policy](image, boxes)
    return tf.ensure_shape(image, [None, None, 3]), tf.ensure_shape(boxes, [None, 4])
