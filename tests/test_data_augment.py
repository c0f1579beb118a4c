"""Augmentation moves boxes with the image: flip, scale jitter, evaluation resize, AutoAugment (by
the official box and Solarize rules)."""

import numpy as np
import PIL.Image
import PIL.ImageOps
import pytest
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.data.augmentation import augment, autoaugment
from efficientdet_tf.data.pipeline import ExampleParser

HEIGHT, WIDTH = 60, 100
RECTANGLE = (10, 20, 40, 50)  # ymin, xmin, ymax, xmax in pixels


def white_rectangle_example():
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    ymin, xmin, ymax, xmax = RECTANGLE
    image[ymin:ymax, xmin:xmax] = 255
    boxes = np.array([RECTANGLE], np.float32) / [HEIGHT, WIDTH, HEIGHT, WIDTH]
    return {
        "image": tf.constant(image),
        "source_id": tf.constant(7, tf.int64),
        "boxes": tf.constant(boxes, tf.float32),
        "classes": tf.constant([1], tf.int32),
        "is_crowd": tf.constant([False]),
        "areas": tf.constant([900.0]),
    }


def bright_pixel_box(image: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(image.min(axis=-1) > threshold)
    return rows.min(), cols.min(), rows.max() + 1, cols.max() + 1


def test_flip_mirrors_boxes_with_the_image():
    example = white_rectangle_example()
    image, boxes = augment.flip_horizontal(example["image"], example["boxes"])
    found = bright_pixel_box(image.numpy(), 127)
    np.testing.assert_allclose(boxes.numpy()[0] * [HEIGHT, WIDTH, HEIGHT, WIDTH], found, atol=1e-4)
    assert found == (10, WIDTH - 50, 40, WIDTH - 20)


# Seeds drawing each combination of flip and scale factor (enlarged and cropped, or shrunk and
# padded). Any crop keeps part of the rectangle: at most 1.8 x 64 = 115 pixels wide, the resized
# image leaves at most 51 pixels out, and the rectangle spans 30% of it from 20% (or 50%) across.
JITTER_SEEDS = {0: "flipped, enlarged x1.27", 3: "flipped, shrunk x0.83",
                4: "enlarged x1.74", 6: "shrunk x0.81"}


@pytest.mark.parametrize("seed", sorted(JITTER_SEEDS))
def test_training_preprocessing_moves_boxes_with_the_image(seed):
    config = get_config(
        "efficientdet-d0", "num_classes=1,image_size=64,jitter_min=0.6,jitter_max=1.8"
    )
    tf.random.set_seed(seed)
    outputs = ExampleParser(config, is_training=True)(white_rectangle_example())
    image = outputs["image"].numpy() * config.stddev_rgb + config.mean_rgb
    box = outputs["groundtruth_data"][0, :4].numpy() / outputs["image_scales"].numpy()
    # Bilinear edges are half-covered pixels: up to about a pixel of difference.
    np.testing.assert_allclose(box, bright_pixel_box(image, 190), atol=1.5)
    assert outputs["groundtruth_data"][0, 6] == 1 and outputs["num_positives"] >= 1


def test_evaluation_resizes_keeping_aspect_and_maps_boxes_back():
    config = get_config("efficientdet-d0", "num_classes=1,image_size=64")
    outputs = ExampleParser(config, is_training=False)(white_rectangle_example())
    scale = 64 / WIDTH
    np.testing.assert_allclose(outputs["image_scales"].numpy(), 1 / scale, rtol=1e-6)
    # Like the official code, boxes follow the image resized to whole pixels (60 * 0.64 -> 38
    # rows), and map back with the unrounded scale.
    scaled_height = int(HEIGHT * scale)
    on_input = np.array(RECTANGLE) * [scaled_height / HEIGHT, scale, scaled_height / HEIGHT, scale]
    np.testing.assert_allclose(outputs["groundtruth_data"][0, :4], on_input / scale, rtol=1e-5)
    image = outputs["image"].numpy() * config.stddev_rgb + config.mean_rgb
    np.testing.assert_allclose(bright_pixel_box(image, 190), on_input, atol=1.0)
    padding = image[scaled_height:]  # below the resized image: zeros before de-normalizing
    np.testing.assert_allclose(padding, np.broadcast_to(config.mean_rgb, padding.shape), atol=1e-3)


GEOMETRIC_OPERATIONS = {
    "translate_x": lambda image, boxes: autoaugment.translate_with_boxes(image, boxes, -23, True),
    "translate_y": lambda image, boxes: autoaugment.translate_with_boxes(image, boxes, 12, False),
    "shear_x": lambda image, boxes: autoaugment.shear_with_boxes(image, boxes, 0.3, True),
    "shear_y": lambda image, boxes: autoaugment.shear_with_boxes(image, boxes, -0.2, False),
    "rotate": lambda image, boxes: autoaugment.rotate_with_boxes(image, boxes, 25.0),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC_OPERATIONS))
def test_autoaugment_geometry_moves_boxes_with_the_image(name):
    example = white_rectangle_example()
    image, boxes = GEOMETRIC_OPERATIONS[name](example["image"], example["boxes"])
    expected = boxes.numpy()[0] * [HEIGHT, WIDTH, HEIGHT, WIDTH]
    # Boxes move on the whole-pixel grid (official rule): a pixel or two from the moved content.
    np.testing.assert_allclose(bright_pixel_box(image.numpy(), 200), expected, atol=2.0)
    assert np.any(np.all(image.numpy() == 128, axis=-1))  # pixels uncovered by the move are grey


# The official box rules, checked on a 240 x 320 image (as in the measurements) with boxes
# given in pixels with fractional parts. Official code: whole pixels are the truncated
# coordinates: a box at (61.5, 97.5, 181.5, 193.5) is (61, 97, 181, 193). Each case: operation,
# level, sign drawn for the magnitude, box in pixels, expected box in whole pixels (or normalized,
# marked `normalized`, for boxes that collapse and get the 0.05 extent of `_check_bbox_area`).
OFFICIAL_H, OFFICIAL_W = 240, 320
BOX = (61.5, 97.5, 181.5, 193.5)
CORNER_BOX = (200.5, 10.5, 230.5, 30.5)
OFFICIAL_BOX_CASES = {
    # `_shift_bbox`: x or y minus the shift (level / 10 * 250 pixels), min clipped to 0, max to the
    # size, then both to the image.
    "translate_x_4_left": ("TranslateX_BBox", 4, 1, BOX, (61, 0, 181, 93)),
    "translate_x_4_right": ("TranslateX_BBox", 4, -1, BOX, (61, 197, 181, 293)),
    # Pushed out of the top: ymin 0, ymax clipped to 0 -> ymax becomes 0.05.
    "translate_y_10_out_top": (
        "TranslateY_BBox", 10, 1, BOX, ("normalized", 0.0, 97 / 320, 0.05, 193 / 320)),
    # Pushed out of the bottom: both at 1 -> ymin becomes 0.95.
    "translate_y_15_out_bottom": (
        "TranslateY_BBox", 15, -1, BOX, ("normalized", 0.95, 97 / 320, 1.0, 193 / 320)),
    # `_shear_bbox`: corners x - s * y (ShearX) or y - s * x (ShearY), s = level / 10 * 0.3,
    # each truncated. ShearX 0.3: x of the corners 97 - 18.3, 193 - 18.3, 97 - 54.3, 193 - 54.3.
    "shear_x_10": ("ShearX_BBox", 10, 1, BOX, (61, 42, 181, 174)),
    # ShearY -0.12: y of the corners 61 + 11.64, 61 + 23.16, 181 + 11.64, 181 + 23.16.
    "shear_y_4": ("ShearY_BBox", 4, -1, BOX, (72, 97, 204, 193)),
    # ShearX -0.45: x of the corners 97 + 27.45, 193 + 27.45, 97 + 81.45, 193 + 81.45.
    "shear_x_15": ("ShearX_BBox", 15, -1, BOX, (61, 124, 181, 274)),
    # ShearX 0.45 at the bottom-left corner: x from 10 - 90 to 30 - 103.5, all < 0 -> 0 .. 0.05.
    "shear_x_15_out_left": (
        "ShearX_BBox", 15, 1, CORNER_BOX, ("normalized", 200 / 240, 0.0, 230 / 240, 0.05)),
    # `_rotate_bbox`: corners from the centre (120, 160), y up, truncated: up 58 / -61
    # (-trunc(-58.5), -trunc(61.5)), x -62 / 33; rotated by d degrees: up' = cos d * up + sin d * x,
    # x' = -sin d * up + cos d * x, truncated; ymin = 120 - max up', xmin = 160 + min x', ...
    # 30: up' 19, 66, -83, -36 and x' -82, 0, -23, 59.
    "rotate_10": ("Rotate_BBox", 10, 1, BOX, (54, 78, 203, 219)),
    # -30: up' 81, 33, -21, -69 and x' -24, 57, -84, -1.
    "rotate_10_clockwise": ("Rotate_BBox", 10, -1, BOX, (39, 76, 189, 217)),
    # 12: up' 43, 63, -72, -52 and x' -72, 20, -47, 44.
    "rotate_4": ("Rotate_BBox", 4, 1, BOX, (57, 88, 192, 204)),
    # 45: up' -2, 64, -86, -19 and x' -84, -17, 0, 66.
    "rotate_15": ("Rotate_BBox", 15, 1, BOX, (56, 76, 206, 226)),
}


@pytest.mark.parametrize("case", sorted(OFFICIAL_BOX_CASES))
def test_geometry_moves_boxes_by_the_official_rules(case, monkeypatch):
    """Official `_shift_bbox`, `_shear_bbox`, `_rotate_bbox` with `_clip_bbox` and
    `_check_bbox_area`, at the operation's level (the random sign fixed)."""
    name, level, sign, box, expected = OFFICIAL_BOX_CASES[case]
    monkeypatch.setattr(autoaugment, "_randomly_negate", lambda value: sign * value)
    size = np.array([OFFICIAL_H, OFFICIAL_W, OFFICIAL_H, OFFICIAL_W], np.float32)
    image = tf.zeros([OFFICIAL_H, OFFICIAL_W, 3], tf.uint8)
    boxes = tf.constant([np.array(box, np.float32) / size])
    _, moved = autoaugment._OPERATIONS[name](image, boxes, level)
    if expected[0] == "normalized":
        expected = np.array(expected[1:])
    else:
        expected = np.array(expected) / size
    np.testing.assert_allclose(moved.numpy()[0], expected, atol=1e-6)


def solarize_input():
    """A 16 x 16 image holding every grey level 0..255 once."""
    return np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=-1)


@pytest.mark.parametrize("level, threshold", [(4, 102), (10, 0), (15, 128)])
def test_solarize_threshold_wraps_like_the_official_uint8_comparison(level, threshold):
    """Official `solarize`: `image < int(level / 10 * 256)` in uint8, so 256 wraps to 0 (every
    pixel inverted) and RandAugment's 384 to 128."""
    image = solarize_input()
    solarized, _ = autoaugment._OPERATIONS["Solarize"](tf.constant(image), tf.zeros([0, 4]), level)
    expected = np.where(image < threshold, image, 255 - image)
    np.testing.assert_array_equal(solarized.numpy(), expected)


def test_equalize_matches_pil():
    rng = np.random.default_rng(0)
    image = rng.normal(100, 30, (32, 48, 3)).clip(0, 255).astype(np.uint8)
    expected = np.asarray(PIL.ImageOps.equalize(PIL.Image.fromarray(image)))
    np.testing.assert_array_equal(autoaugment.equalize(tf.constant(image)).numpy(), expected)


def _policy_operations(policy):
    """(name, level) of every operation a policy applies."""
    if policy == "v0":
        return {(name, level) for sub_policy in autoaugment.POLICY_V0
                for name, _, level in sub_policy}
    return {(name, autoaugment.RANDAUG_MAGNITUDE) for name in autoaugment.RANDAUG_OPERATIONS}


POLICY_GEOMETRY = sorted(
    (name, level) for policy in ("v0", "randaug") for name, level in _policy_operations(policy)
    if name.endswith("_BBox")
)


@pytest.mark.parametrize("name, level", POLICY_GEOMETRY)
def test_policy_geometry_moves_boxes_with_the_image(name, level):
    """Each geometric operation at its policy level, both directions (a random sign)."""
    height, width = 160, 300
    image = np.zeros((height, width, 3), np.uint8)
    image[60:100, 130:190] = 255  # near the centre: rotation and shear keep part of it inside
    boxes = tf.constant([[60 / height, 130 / width, 100 / height, 190 / width]])
    moved_boxes = set()
    for seed in (0, 4):  # seeds drawing a negative, then a positive magnitude
        tf.random.set_seed(seed)
        augmented, moved = autoaugment._OPERATIONS[name](tf.constant(image), boxes, level)
        if np.any(augmented.numpy() == 255):
            moved_pixels = moved.numpy()[0] * [height, width, height, width]
            np.testing.assert_allclose(
                bright_pixel_box(augmented.numpy(), 200), moved_pixels, atol=1.0)
        else:  # pushed out of the image, with its content: a 5% strip at the border it left by
            ymin, xmin, ymax, xmax = moved.numpy()[0]
            assert [ymax - ymin, xmax - xmin].count(pytest.approx(0.05)) == 1, moved
        moved_boxes.add(tuple(np.round(moved.numpy()[0], 4)))
    if level > 0:
        assert len(moved_boxes) == 2, moved_boxes  # moved, one way or the other


def test_box_content_translation_stays_inside_the_box():
    image = tf.constant(np.random.default_rng(2).integers(0, 255, (50, 70, 3)), tf.uint8)
    boxes = tf.constant([[0.2, 0.3, 0.8, 0.7]])  # rows 10..40, columns 21..49
    translate = autoaugment._BOX_CONTENT_OPERATIONS["TranslateY_Only_BBoxes"](6)
    augmented = autoaugment._inside_each_box(image, boxes, 1.0, translate).numpy()
    inside = np.zeros((50, 70), bool)
    inside[10:41, 21:50] = True
    assert not np.array_equal(augmented[inside], image.numpy()[inside])
    np.testing.assert_array_equal(augmented[~inside], image.numpy()[~inside])


@pytest.mark.parametrize("policy", ["v0", "randaug"])
def test_policies_change_pixels_in_a_graph_with_and_without_boxes(policy):
    augment_fn = tf.function(lambda image, boxes: autoaugment.augment(image, boxes, policy))
    image = tf.constant(np.random.default_rng(1).integers(0, 255, (50, 70, 3)), tf.uint8)
    tf.random.set_seed(0)
    for boxes in ([[0.1, 0.2, 0.5, 0.6], [0.4, 0.4, 0.9, 0.8]], np.zeros((0, 4))):
        changed = 0
        for _ in range(8):
            augmented, new_boxes = augment_fn(image, tf.constant(boxes, tf.float32))
            assert augmented.shape == image.shape and augmented.dtype == tf.uint8
            assert new_boxes.shape == (len(boxes), 4)
            assert np.all((new_boxes.numpy() >= 0) & (new_boxes.numpy() <= 1))
            changed += not np.array_equal(augmented.numpy(), image.numpy())
        # Some draws change nothing (v0's ShearX_BBox at level 0, operations' probabilities).
        assert changed >= 5, f"{changed} of 8 augmented images differ from the input"
    with pytest.raises(ValueError, match="Unknown autoaugment_policy 'v9'"):
        autoaugment.augment(image, tf.zeros([0, 4]), "v9")


def test_target_size_is_what_the_scale_jitter_scales():
    """official dataloader `set_training_random_scale_factors(..., target_size)`: the drawn
    factor times target_size (truncated), not times image_size; the crop stays image_size."""
    image = tf.zeros([HEIGHT, WIDTH, 3])
    tf.random.set_seed(3)
    factor = float(tf.random.uniform([], 0.5, 1.5))
    tf.random.set_seed(3)
    transform = augment.random_jitter_transform(image, (64, 64), 0.5, 1.5, target_size=(96, 128))
    expected = min(int(factor * 96) / HEIGHT, int(factor * 128) / WIDTH)
    assert float(transform.scale) == pytest.approx(expected, rel=1e-6)

    example = white_rectangle_example()
    fixed = "num_classes=1,image_size=64,jitter_min=1.0,jitter_max=1.0,input_rand_hflip=false"
    for target_size, scale in ((None, 0.64), ("128", 1.28), ("64x32", 32 / HEIGHT)):
        config = get_config("efficientdet-d0", f"{fixed},target_size={target_size}")
        outputs = ExampleParser(config, is_training=True)(example)
        assert outputs["image"].shape == (64, 64, 3)
        assert float(outputs["image_scales"]) == pytest.approx(1 / scale, rel=1e-6)
