"""GridMask [1] as the official EfficientDet applies it (`aug/gridmask.py`, hparam grid_mask).

[1] Chen et al., GridMask Data Augmentation, arXiv:2001.04086.

The official grid, quirks included (constants below are the official defaults):
- a square grid of side (1 + 0.5) * max(height, width), of period d drawn uniformly from
  int(min(0.5 * height, 0.3 * width)) .. int(max(0.5 * height, 0.3 * width));
- bands of width l = min(max(int(0.6 * d + 0.5), 1), d - 1) start at an offset s drawn from 0..d
  for rows and another for columns, and repeat every d pixels, side // d times from s on (so no
  band before s); pixels in a row band or a column band keep their value, the squares of
  d - l pixels between bands become 0;
- the grid is rotated about its centre by 10 * r degrees with r drawn from a normal of mean -1
  and standard deviation 1 (the official `tf.random.normal([], -1, 1)`), bilinearly, the result
  truncated to integers: only pixels whose four neighbours all lie in bands stay kept;
- its centre crop of the image size multiplies the image when a standard normal draw is below 0.5
  (about 69% of images). Boxes are unchanged.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf

from efficientdet_tf.data.augmentation import affine

_PROBABILITY = 0.5  # Official `prob`: compared with a standard normal draw.
_BAND_RATIO = 0.6  # Official `ratio`: band width / period.
_ROTATE_DEGREES = 10.0  # Official `rotate`: scale of the drawn rotation.
_SIZE_RATIO = 0.5  # Official `gridmask_size_ratio`: the grid is (1 + this) x the image side.
_FILL = 1  # Official `fill`: the value of the bands (1 keeps pixels).


class GridDraws(NamedTuple):
    """The random values of one official grid: period d, row and column band offsets, rotation."""

    period: tf.Tensor
    offset_y: tf.Tensor
    offset_x: tf.Tensor
    degrees: tf.Tensor


def _grid_side(height, width) -> tf.Tensor:
    longest = tf.maximum(tf.cast(height, tf.float32), tf.cast(width, tf.float32))
    return tf.cast((1.0 + _SIZE_RATIO) * longest, tf.int32)


def draw_grid(height, width) -> GridDraws:
    """The official draws, in the official order, for an image of height x width."""
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    low, high = 0.5 * height, 0.3 * width
    period = tf.random.uniform(
        [],
        minval=tf.cast(tf.minimum(low, high), tf.int32),
        maxval=tf.cast(tf.maximum(low, high), tf.int32) + 1,
        dtype=tf.int32,
    )
    offset_y = tf.random.uniform([], 0, period + 1, tf.int32)
    offset_x = tf.random.uniform([], 0, period + 1, tf.int32)
    degrees = _ROTATE_DEGREES * tf.random.normal([], -1.0, 1.0)
    return GridDraws(period, offset_y, offset_x, degrees)


def _band_width(period) -> tf.Tensor:
    width = tf.cast(tf.cast(period, tf.float32) * _BAND_RATIO + 0.5, tf.int32)
    return tf.minimum(tf.maximum(width, 1), period - 1)


def _bands(side, period, offset) -> tf.Tensor:
    """[side] bool: rows (or columns) of the official bands [offset + i * period, + band width)
    for i in 0 .. side // period - 1."""
    position = tf.range(side) - offset
    return ((position >= 0) & (position // period < side // period)
            & (position % period < _band_width(period)))


def grid_pattern(height, width, draws: GridDraws) -> tf.Tensor:
    """The official mask for `draws`: int32 [height, width], `_FILL` where kept, else 0."""
    side = _grid_side(height, width)
    in_band = (_bands(side, draws.period, draws.offset_y)[:, None]
               | _bands(side, draws.period, draws.offset_x)[None, :])
    grid = tf.where(in_band, _FILL, 0)[:, :, None]
    radians = math.pi * tf.cast(draws.degrees, tf.float32) / 180.0
    grid = affine.sample(grid, affine.rotation(radians, side, side), 0, "BILINEAR")[:, :, 0]
    top, left = (side - height) // 2, (side - width) // 2
    return grid[top : top + height, left : left + width]


def grid_mask(image: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Official `gridmask`: the image [height, width, channels] times a random grid, applied when
    a standard normal draw is below `_PROBABILITY`; boxes unchanged."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    mask = tf.cast(grid_pattern(height, width, draw_grid(height, width)), image.dtype)
    applied = tf.random.normal([]) < _PROBABILITY
    return tf.where(applied, image * mask[:, :, None], image), boxes
