"""GridMask as the official `aug/gridmask.py`: grid geometry for fixed draws, the draws, the
pipeline hparam."""

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.data.augmentation import gridmask
from efficientdet_tf.data.pipeline import ExampleParser

HEIGHT, WIDTH = 20, 40  # the official grid is 60 x 60 (1.5 x the longest side), periods 10..12


def draws(period=10, offset_y=3, offset_x=7, degrees=0.0):
    return gridmask.GridDraws(*(tf.constant(v) for v in (period, offset_y, offset_x)),
                              tf.constant(degrees, tf.float32))


FIXED_DRAW_CASES = {
    # 20 x 40, period 10: bands int(10 * 0.6 + 0.5) = 6 wide. In the 60 x 60 grid, rows
    # 3 + 10 i .. + 5 and columns 7 + 10 i .. + 5 (i = 0..5) are kept. The image is the centre
    # crop, grid rows 20..39 and columns 10..49: so rows 3..8, 13..18 and columns 0..2, 7..12,
    # 17..22, 27..32, 37..39 of the image.
    "wide": (20, 40, draws(period=10, offset_y=3, offset_x=7),
             [*range(3, 9), *range(13, 19)],
             [*range(3), *range(7, 13), *range(17, 23), *range(27, 33), *range(37, 40)]),
    # 40 x 20, period 20: bands int(12.5) = 12 wide. Grid rows 20 + 20 i .. + 11 (i = 0..2, the
    # last one past the grid) and columns 0 + 20 i .. + 11; the crop is grid rows 10..49 and
    # columns 20..39. The official loop starts at the offset: grid rows 0..11 (image rows 0, 1)
    # are not a band.
    "tall, no band before the offset": (40, 20, draws(period=20, offset_y=20, offset_x=0),
                                        [*range(10, 22), *range(30, 40)], [*range(12)]),
}


@pytest.mark.parametrize("case", sorted(FIXED_DRAW_CASES))
def test_grid_of_fixed_draws_matches_the_official_construction(case):
    height, width, fixed_draws, kept_rows, kept_columns = FIXED_DRAW_CASES[case]
    expected = np.zeros((height, width), np.int32)
    expected[kept_rows, :] = 1
    expected[:, kept_columns] = 1
    pattern = gridmask.grid_pattern(height, width, fixed_draws)
    np.testing.assert_array_equal(pattern.numpy(), expected)


def test_band_width_of_the_official_ratio_and_its_bounds():
    # min(max(int(0.6 d + 0.5), 1), d - 1): 6.5 -> 6, 7.1 -> 7, and at d = 2: 1.7 -> 1 = d - 1.
    for period, width in [(10, 6), (11, 7), (2, 1)]:
        assert gridmask._band_width(tf.constant(period)).numpy() == width


def official_grid(side, period, offset_y, offset_x):
    """The official `GridMask.mask` loops: rows, then (transposed) columns, set to 1 in bands."""
    width = min(max(int(period * 0.6 + 0.5), 1), period - 1)
    grid = np.zeros((side, side), np.int32)
    for offset in (offset_y, offset_x):
        for i in range(side // period):
            start = period * i + offset
            grid[start : min(start + width, side)] = 1
        grid = grid.T
    return grid


def rotated_reference(grid: np.ndarray, degrees: float) -> np.ndarray:
    """tfa.image.rotate of an int32 grid, bilinear, zeros outside, truncated to integers: output
    (x, y) samples the input at (cos x - sin y + dx, sin x + cos y + dy), in float32 as the
    kernel."""
    last = np.float32(grid.shape[0] - 1)
    radians = np.float32(np.pi) * np.float32(degrees) / np.float32(180)
    cos, sin = np.cos(radians, dtype=np.float32), np.sin(radians, dtype=np.float32)
    offset_x = (last - (cos * last - sin * last)) / np.float32(2)
    offset_y = (last - (sin * last + cos * last)) / np.float32(2)
    y, x = np.mgrid[: grid.shape[0], : grid.shape[1]].astype(np.float32)
    source_x, source_y = cos * x - sin * y + offset_x, sin * x + cos * y + offset_y
    padded = np.pad(grid, 1).astype(np.float32)  # zeros outside

    def at(row, col):  # grid[row, col], 0 outside
        inside = (row >= -1) & (row <= grid.shape[0]) & (col >= -1) & (col <= grid.shape[1])
        row, col = np.clip(row, -1, grid.shape[0]), np.clip(col, -1, grid.shape[1])
        return np.where(inside, padded[row + 1, col + 1], 0)

    row0, col0 = np.floor(source_y), np.floor(source_x)
    r, c = row0.astype(int), col0.astype(int)
    top = (col0 + 1 - source_x) * at(r, c) + (source_x - col0) * at(r, c + 1)
    bottom = (col0 + 1 - source_x) * at(r + 1, c) + (source_x - col0) * at(r + 1, c + 1)
    value = (row0 + 1 - source_y) * top + (source_y - row0) * bottom
    return value.astype(np.int32)


def test_grid_rotation_is_the_official_bilinear_rotation_truncated():
    degrees = -12.5  # a draw of 10 * N(-1, 1)
    side = 60  # int(1.5 * 40): the grid of a 20 x 40 image, cropped at rows 20..39, columns 10..49
    grid = official_grid(side, period=10, offset_y=3, offset_x=7)
    expected = rotated_reference(grid, degrees)[20:40, 10:50]
    rotated = gridmask.grid_pattern(HEIGHT, WIDTH, draws(degrees=degrees)).numpy()
    np.testing.assert_array_equal(rotated, expected)
    # Truncation keeps only pixels whose neighbours are all kept: fewer than the unrotated grid.
    assert 0 < rotated.sum() < grid[20:40, 10:50].sum()


def test_official_draws():
    """Period uniform in int(min(0.5 h, 0.3 w)) .. int(max(...)), offsets in 0..period, rotation
    10 * N(-1, 1) degrees, applied when N(0, 1) < 0.5 (69%)."""
    tf.random.set_seed(3)
    draw = tf.function(lambda: gridmask.draw_grid(HEIGHT, WIDTH))
    samples = [draw() for _ in range(200)]
    periods = np.array([s.period.numpy() for s in samples])
    assert set(periods) == {10, 11, 12}
    for offsets in ([s.offset_y.numpy() for s in samples], [s.offset_x.numpy() for s in samples]):
        assert np.all((0 <= np.array(offsets)) & (offsets <= periods))
        assert np.any(np.array(offsets) == periods) and np.any(np.array(offsets) == 0)
    degrees = np.array([s.degrees.numpy() for s in samples])
    assert abs(degrees.mean() + 10.0) < 2.0 and 8.0 < degrees.std() < 12.0

    image = tf.fill([HEIGHT, WIDTH, 3], tf.constant(200, tf.uint8))
    apply = tf.function(lambda: gridmask.grid_mask(image, tf.zeros([0, 4]))[0])
    applied = [np.any(apply().numpy() == 0) for _ in range(200)]
    assert 0.6 < np.mean(applied) < 0.78  # P(N(0, 1) < 0.5) = 0.69


def test_grid_mask_multiplies_the_image_and_keeps_boxes_shape_and_dtype():
    image = tf.constant(np.random.default_rng(0).integers(1, 255, (HEIGHT, WIDTH, 3)), tf.uint8)
    boxes = tf.constant([[0.1, 0.2, 0.5, 0.6]])
    tf.random.set_seed(0)
    masked, same_boxes = tf.function(gridmask.grid_mask)(image, boxes)
    assert masked.shape == image.shape and masked.dtype == tf.uint8
    np.testing.assert_array_equal(same_boxes.numpy(), boxes.numpy())
    zeroed = np.all(masked.numpy() == 0, axis=-1)
    kept = ~zeroed
    np.testing.assert_array_equal(masked.numpy()[kept], image.numpy()[kept])


def white_example(size):
    return {
        "image": tf.fill([size, size, 3], tf.constant(255, tf.uint8)),
        "source_id": tf.constant(1, tf.int64),
        "boxes": tf.constant([[0.25, 0.25, 0.75, 0.75]]),
        "classes": tf.constant([1], tf.int32),
        "is_crowd": tf.constant([False]),
        "areas": tf.constant([100.0]),
    }


def test_grid_mask_hparam_turns_it_on_in_the_training_pipeline():
    size = 64
    black_pixels = {}
    for grid_mask in (False, True):
        config = get_config("efficientdet-d0", f"num_classes=1,image_size={size},jitter_min=1.0,"
                            f"jitter_max=1.0,input_rand_hflip=false,grid_mask={grid_mask}")
        parser = ExampleParser(config, is_training=True)
        tf.random.set_seed(1)
        black = 0
        for _ in range(4):
            image = parser(white_example(size))["image"].numpy()
            black += np.all(np.abs(image * config.stddev_rgb + config.mean_rgb) < 0.5,
                            axis=-1).sum()
        black_pixels[grid_mask] = black
    assert black_pixels[False] == 0
    # Applied to about 69% of images, zeroing squares of (0.4 period)^2 in each period^2.
    assert black_pixels[True] > size * size * 0.1
