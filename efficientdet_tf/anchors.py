"""Anchor boxes of the feature pyramid and the box coder that relates boxes to anchors.

Both follow the official EfficientDet code: anchors come level by level, and within a level position
by position (row-major: y, then x); at each position one anchor per (scale octave, aspect ratio),
octave-major. The box coder is the Faster R-CNN coder without scale factors.

`decode_boxes` and `per_anchor` turn network outputs into boxes: `keras.ops`, for every backend.
`encode_boxes` and `Anchors.level_maps` label training examples inside the tf.data input
pipeline: TensorFlow ops, whatever the Keras backend. `intersection_and_union` serves both the
input pipeline and the losses.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
from keras import ops

# Floor of box and anchor sizes before dividing by them and taking logs (official box coder).
_MIN_BOX_SIZE = 1e-8


def _as_height_width(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    if len(image_size) != 2:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}.")
    return int(image_size[0]), int(image_size[1])


def num_anchors_per_location(num_scales: int, aspect_ratios: Sequence[float]) -> int:
    """Anchors at each feature-map position: one per (scale octave, aspect ratio)."""
    return num_scales * len(aspect_ratios)


def intersection_and_union(boxes_a, boxes_b, math=tf.math) -> tuple:
    """Areas of the intersection and of the union of yxyx boxes [..., 4], broadcast against each
    other (`boxes_a[:, None]` against `boxes_b[None]` gives every pair). Inverted boxes count as
    empty.

    `math` is the namespace of `maximum` and `minimum`: `tf.math` in the input pipeline (tf.data
    runs TensorFlow whatever the Keras backend), `keras.ops` in the losses.
    """
    a_ymin, a_xmin, a_ymax, a_xmax = (boxes_a[..., i] for i in range(4))
    b_ymin, b_xmin, b_ymax, b_xmax = (boxes_b[..., i] for i in range(4))
    heights = math.maximum(math.minimum(a_ymax, b_ymax) - math.maximum(a_ymin, b_ymin), 0.0)
    widths = math.maximum(math.minimum(a_xmax, b_xmax) - math.maximum(a_xmin, b_xmin), 0.0)
    intersection = heights * widths
    area_a = math.maximum(a_ymax - a_ymin, 0.0) * math.maximum(a_xmax - a_xmin, 0.0)
    area_b = math.maximum(b_ymax - b_ymin, 0.0) * math.maximum(b_xmax - b_xmin, 0.0)
    return intersection, area_a + area_b - intersection


def per_anchor(level_output, values_per_anchor: int):
    """A level's output [batch, H, W, anchors * values] -> [batch, H * W * anchors, values], in
    the order of `Anchors.boxes` within the level (the inverse of `Anchors.level_maps`)."""
    height, width, channels = level_output.shape[1:]
    return ops.reshape(level_output, (-1, height * width * channels // values_per_anchor,
                                      values_per_anchor))


def feature_sizes(image_size: int | Sequence[int], max_level: int) -> list[tuple[int, int]]:
    """(height, width) of the feature map of every level 0..max_level; level 0 is the image.

    Each level halves the previous one rounding up, like a stride-2 'same' convolution.
    """
    sizes = [_as_height_width(image_size)]
    for _ in range(max_level):
        height, width = sizes[-1]
        sizes.append(((height - 1) // 2 + 1, (width - 1) // 2 + 1))
    return sizes


class Anchors:
    """Multi-level anchor boxes, [ymin, xmin, ymax, xmax] in pixels of the network input.

    Build with `Anchors.from_config(config)`, or from explicit values like the official class:
    `Anchors(min_level, max_level, num_scales, aspect_ratios, anchor_scale, image_size)`.
    `aspect_ratios` are width / height.

    Attributes:
      boxes: float32 numpy array [num_anchors, 4].
      num_anchors_per_location: num_scales * len(aspect_ratios).
      level_sizes: {level: (height, width)} of the feature maps min_level..max_level.
      num_anchors_per_level: {level: number of anchors on that level}.
    """

    def __init__(
        self,
        min_level: int,
        max_level: int,
        num_scales: int,
        aspect_ratios: Sequence[float],
        anchor_scale: float,
        image_size: int | Sequence[int],
    ):
        if not 0 <= min_level <= max_level:
            raise ValueError(f"Need 0 <= min_level <= max_level, got {min_level}, {max_level}.")
        self.min_level, self.max_level = int(min_level), int(max_level)
        self.num_scales = int(num_scales)
        self.aspect_ratios = [float(ratio) for ratio in aspect_ratios]
        self.anchor_scale = float(anchor_scale)
        self.image_size = _as_height_width(image_size)
        self.num_anchors_per_location = num_anchors_per_location(
            self.num_scales, self.aspect_ratios)

        all_sizes = feature_sizes(self.image_size, self.max_level)
        self.level_sizes = {level: all_sizes[level] for level in self.levels}
        self.num_anchors_per_level = {
            level: height * width * self.num_anchors_per_location
            for level, (height, width) in self.level_sizes.items()
        }
        level_boxes = [self._level_boxes(level) for level in self.levels]
        self.boxes = np.concatenate(level_boxes).astype(np.float32)

    @classmethod
    def from_config(cls, config) -> "Anchors":
        """Anchors of a config's min_level, max_level, num_scales, aspect_ratios, anchor_scale
        and image_size."""
        return cls(config.min_level, config.max_level, config.num_scales, config.aspect_ratios,
                   config.anchor_scale, config.image_size)

    @property
    def levels(self) -> range:
        return range(self.min_level, self.max_level + 1)

    def split_levels(self, per_anchor) -> list:
        """An array [num_anchors, ...] in anchor order (NumPy, or a tensor of any backend: only
        slicing), split into one part per level."""
        bounds = np.cumsum([0] + [self.num_anchors_per_level[level] for level in self.levels])
        return [per_anchor[int(start):int(end)] for start, end in zip(bounds[:-1], bounds[1:])]

    def level_maps(self, per_anchor: tf.Tensor) -> dict[int, tf.Tensor]:
        """[num_anchors, ...] -> {level: [H_l, W_l, -1]}, the layout of the network's outputs."""
        return {
            level: tf.reshape(part, [*self.level_sizes[level], -1])
            for level, part in zip(self.levels, self.split_levels(per_anchor))
        }

    def __len__(self) -> int:
        return len(self.boxes)

    def _level_boxes(self, level: int) -> np.ndarray:
        """[height * width * anchors_per_location, 4] boxes of one level, in float64."""
        image_height, image_width = self.image_size
        level_height, level_width = self.level_sizes[level]
        # Strides are the exact ratio image / feature map, not 2**level, for any image size.
        stride_y, stride_x = image_height / level_height, image_width / level_width
        centers_y = np.arange(stride_y / 2, image_height, stride_y)
        centers_x = np.arange(stride_x / 2, image_width, stride_x)
        centers_x, centers_y = (c.reshape(-1) for c in np.meshgrid(centers_x, centers_y))

        half_heights, half_widths = self._half_sizes(stride_y, stride_x)
        boxes = np.stack(
            [
                centers_y[:, None] - half_heights,
                centers_x[:, None] - half_widths,
                centers_y[:, None] + half_heights,
                centers_x[:, None] + half_widths,
            ],
            axis=-1,
        )
        return boxes.reshape(-1, 4)

    def _half_sizes(self, stride_y: float, stride_x: float) -> tuple[np.ndarray, np.ndarray]:
        """Half height and half width of the anchors at one position, octave-major.

        An aspect ratio r keeps the area: width * sqrt(r), height / sqrt(r).
        """
        half_heights, half_widths = [], []
        for octave in range(self.num_scales):
            octave_scale = 2 ** (octave / self.num_scales)
            for aspect_ratio in self.aspect_ratios:
                aspect_x = np.sqrt(aspect_ratio)
                aspect_y = 1.0 / aspect_x
                half_heights.append(self.anchor_scale * stride_y * octave_scale * aspect_y / 2.0)
                half_widths.append(self.anchor_scale * stride_x * octave_scale * aspect_x / 2.0)
        return np.array(half_heights), np.array(half_widths)


def _centers_and_sizes(boxes) -> tuple:
    """Centers and sizes of yxyx boxes [..., 4] (indexing only: a tensor of any backend)."""
    ymin, xmin, ymax, xmax = (boxes[..., i] for i in range(4))
    return (ymin + ymax) / 2.0, (xmin + xmax) / 2.0, ymax - ymin, xmax - xmin


def encode_boxes(boxes, anchors) -> tf.Tensor:
    """[..., 4] yxyx boxes -> [..., 4] regression targets [ty, tx, th, tw] relative to anchors.

    ty = (y - y_a) / h_a, tx = (x - x_a) / w_a, th = log(h / h_a), tw = log(w / w_a), with centers
    (y, x) and sizes (h, w); `anchors` broadcasts against `boxes`.
    """
    boxes = tf.convert_to_tensor(boxes, dtype_hint=tf.float32)
    anchors = tf.cast(anchors, boxes.dtype)
    center_y_a, center_x_a, height_a, width_a = _centers_and_sizes(anchors)
    center_y, center_x, height, width = _centers_and_sizes(boxes)
    height_a, width_a, height, width = (
        tf.maximum(size, _MIN_BOX_SIZE) for size in (height_a, width_a, height, width)
    )
    return tf.stack(
        [
            (center_y - center_y_a) / height_a,
            (center_x - center_x_a) / width_a,
            tf.math.log(height / height_a),
            tf.math.log(width / width_a),
        ],
        axis=-1,
    )


def decode_boxes(encoded, anchors):
    """Inverse of `encode_boxes`: [..., 4] [ty, tx, th, tw] -> [..., 4] yxyx boxes."""
    encoded = ops.convert_to_tensor(encoded, dtype="float32")
    anchors = ops.cast(anchors, encoded.dtype)
    center_y_a, center_x_a, height_a, width_a = _centers_and_sizes(anchors)
    ty, tx, th, tw = (encoded[..., i] for i in range(4))
    height, width = ops.exp(th) * height_a, ops.exp(tw) * width_a
    center_y, center_x = ty * height_a + center_y_a, tx * width_a + center_x_a
    return ops.stack(
        [
            center_y - height / 2.0,
            center_x - width / 2.0,
            center_y + height / 2.0,
            center_x + width / 2.0,
        ],
        axis=-1,
    )
