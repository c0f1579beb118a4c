"""Synthetic shapes: a detection dataset made from a seed, with exact boxes; the built-in demo data.

Each image has 1 to `max_objects` filled circles, squares and triangles (classes 1, 2, 3) on a
striped, low-contrast background. Objects sit in distinct cells of a 2 x 2 grid, so they never
overlap, and each touches all four sides of its box: a box is exactly the pixels its shape covers.
With `with_masks` each image has its segmentation mask: the class of every pixel (0: background),
exactly the pixels each shape is painted on.
Each class draws its colour from its own strong palette, so that a small model learns the task in
minutes; the shapes still differ for the boxes to be learned.

Everything follows from (seed, num_images, image_size): the object layout is drawn with NumPy at
construction, and images are rendered from it with TF ops, inside the input pipeline or eagerly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf

from efficientdet_tf.data.converters.record_writer import (
    ConversionSummary,
    PreparedRecord,
    write_tfrecords,
)
from efficientdet_tf.data.formats.annotations import ImageAnnotations, to_coco_json
from efficientdet_tf.data.formats.images import EncodedImage
from efficientdet_tf.data.formats.masks import encode_mask
from efficientdet_tf.data.sources.base import Source, shard_for_input_pipeline
from efficientdet_tf.label_map import SYNTHETIC_CLASS_NAMES
from efficientdet_tf.output_files import write_file

# Strong colours per class; every colour has a channel outside the background's 45..205 range.
_PALETTES = {
    1: ((230, 30, 30), (250, 120, 20)),  # circles: red, orange
    2: ((30, 60, 235), (20, 220, 230)),  # squares: blue, cyan
    3: ((40, 215, 40), (240, 230, 20)),  # triangles: green, yellow
}
_BACKGROUND_BASE = (70.0, 180.0)  # per-channel base colour range
_BACKGROUND_AMPLITUDE = (10.0, 25.0)  # stripe amplitude range
_BACKGROUND_CYCLES = (1.0, 6.0)  # stripe cycles across the image, per axis
_GRID = 2  # objects sit in distinct cells of a _GRID x _GRID grid

# Named splits of the dataset spec 'synthetic:<split>': seed and default number of images.
SPLITS = {"train": (0, 1024), "val": (1, 128)}


class SyntheticShapes(Source):
    """The synthetic dataset of `num_images` images of `image_size` (height, width) from `seed`."""

    max_class_id = max(SYNTHETIC_CLASS_NAMES)
    class_names = SYNTHETIC_CLASS_NAMES

    def __init__(
        self,
        num_images: int,
        image_size: Sequence[int],
        seed: int = 0,
        max_objects: int = 3,
        object_size: tuple[float, float] = (0.15, 0.45),
        with_masks: bool = False,
    ):
        self.height, self.width = (int(s) for s in image_size)
        if not 1 <= max_objects <= _GRID * _GRID:
            raise ValueError(f"max_objects must be in 1..{_GRID * _GRID}, got {max_objects}.")
        if not 0.0 < object_size[0] <= object_size[1] <= 1.0 / _GRID:
            raise ValueError(
                f"object_size {object_size} must be fractions of the image side with "
                f"0 < min <= max <= {1.0 / _GRID} (objects stay inside one grid cell)."
            )
        if min(self.height, self.width) * object_size[0] < 4:
            raise ValueError(f"Image size {image_size} is too small for objects of {object_size}.")
        self.num_examples = int(num_images)
        self.seed = seed
        self.max_objects = max_objects
        self.object_size = object_size
        self.with_masks = with_masks
        self._layout = self._draw_layout(np.random.default_rng(seed))

    @classmethod
    def split(cls, name: str, image_size: Sequence[int], num_images: int | None = None,
              with_masks: bool = False):
        """A named split ('train' or 'val'): its own seed, and by default its own size."""
        if name not in SPLITS:
            raise ValueError(f"Unknown synthetic split {name!r}; use one of {sorted(SPLITS)}.")
        seed, default_count = SPLITS[name]
        return cls(num_images or default_count, image_size, seed=seed, with_masks=with_masks)

    # --- layout (NumPy) -------------------------------------------------------------------------

    def _draw_layout(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        n, k = self.num_examples, self.max_objects
        classes = np.zeros([n, k], np.int32)  # 0: no object
        boxes = np.zeros([n, k, 4], np.int32)  # ymin, xmin, ymax, xmax, pixel edges
        colors = np.zeros([n, k, 3], np.float32)
        cell_h, cell_w = self.height // _GRID, self.width // _GRID
        short_side = min(self.height, self.width)
        for i in range(n):
            count = rng.integers(1, k + 1)
            for j, cell in enumerate(rng.permutation(_GRID * _GRID)[:count]):
                class_id = rng.integers(1, len(SYNTHETIC_CLASS_NAMES) + 1)
                side = int(rng.uniform(*self.object_size) * short_side)
                y0 = (cell // _GRID) * cell_h + rng.integers(0, cell_h - side + 1)
                x0 = (cell % _GRID) * cell_w + rng.integers(0, cell_w - side + 1)
                palette = _PALETTES[class_id]
                classes[i, j] = class_id
                boxes[i, j] = (y0, x0, y0 + side, x0 + side)
                colors[i, j] = palette[rng.integers(len(palette))]
        return {
            "classes": classes,
            "boxes": boxes,
            "colors": colors,
            "background_base": rng.uniform(*_BACKGROUND_BASE, size=[n, 3]).astype(np.float32),
            "background_amplitude": rng.uniform(*_BACKGROUND_AMPLITUDE, [n, 3]).astype(np.float32),
            "background_cycles": rng.uniform(*_BACKGROUND_CYCLES, [n, 2]).astype(np.float32),
            "background_phase": rng.uniform(0, 2 * np.pi, [n]).astype(np.float32),
        }

    def annotations(self, index: int) -> ImageAnnotations:
        """Exact ground truth of image `index` (0-based); its image id is index + 1."""
        present = self._layout["classes"][index] > 0
        boxes = self._layout["boxes"][index][present].astype(np.float32)
        return ImageAnnotations(
            image_id=index + 1,
            file_name=f"synthetic_{self.seed}_{index:06d}.png",
            height=self.height,
            width=self.width,
            boxes=boxes,
            classes=self._layout["classes"][index][present],
            is_crowd=np.zeros(len(boxes), np.int64),
            areas=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        )

    def coco_groundtruth(self) -> dict:
        return to_coco_json([self.annotations(i) for i in range(self.num_examples)],
                            SYNTHETIC_CLASS_NAMES)

    # --- rendering (TF) -------------------------------------------------------------------------

    def _pixel_grid(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Rows [height, 1] and columns [1, width]: pixel i covers [i, i + 1)."""
        rows = tf.range(self.height, dtype=tf.float32)[:, None]
        cols = tf.range(self.width, dtype=tf.float32)[None, :]
        return rows, cols

    def _object_masks(self, layout: dict[str, tf.Tensor], rows, cols) -> list[tf.Tensor]:
        """bool [height, width] per object slot: the pixels its shape covers (none when empty)."""
        return [_shape_mask(layout["classes"][j], tf.cast(layout["boxes"][j], tf.float32),
                            rows, cols) for j in range(self.max_objects)]

    def _render(self, layout: dict[str, tf.Tensor]) -> tf.Tensor:
        """uint8 [height, width, 3] image of one layout row."""
        rows, cols = self._pixel_grid()
        cycles = layout["background_cycles"]
        phase = cycles[0] * (rows + 0.5) / self.height + cycles[1] * (cols + 0.5) / self.width
        wave = tf.sin(2 * np.pi * phase + layout["background_phase"])
        image = layout["background_base"] + layout["background_amplitude"] * wave[:, :, None]
        for j, mask in enumerate(self._object_masks(layout, rows, cols)):
            image = tf.where(mask[:, :, None], layout["colors"][j], image)
        return tf.cast(tf.round(image), tf.uint8)

    def _segmentation_mask(self, layout: dict[str, tf.Tensor]) -> tf.Tensor:
        """uint8 [height, width] class of each pixel of one layout row (0: background), exactly
        the pixels `_render` paints with each shape."""
        mask = tf.zeros([self.height, self.width], tf.uint8)
        for j, covered in enumerate(self._object_masks(layout, *self._pixel_grid())):
            mask = tf.where(covered, tf.cast(layout["classes"][j], tf.uint8), mask)
        return mask

    def _example(self, index: tf.Tensor, layout: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        present = layout["classes"] > 0
        boxes = tf.cast(tf.boolean_mask(layout["boxes"], present), tf.float32)
        size = tf.constant([self.height, self.width] * 2, tf.float32)
        masks = {"segmentation_mask": self._segmentation_mask(layout)} if self.with_masks else {}
        return {
            "image": self._render(layout),
            "source_id": tf.cast(index, tf.int64) + 1,
            "boxes": boxes / size,
            "classes": tf.boolean_mask(layout["classes"], present),
            "is_crowd": tf.zeros(tf.shape(boxes)[:1], tf.bool),
            "areas": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            **masks,
        }

    def render(self, index: int) -> np.ndarray:
        """Image `index` as a uint8 NumPy array."""
        return self._render(self._layout_row(index)).numpy()

    def render_mask(self, index: int) -> np.ndarray:
        """The segmentation mask of image `index`, uint8 [height, width]."""
        return self._segmentation_mask(self._layout_row(index)).numpy()

    def _layout_row(self, index: int) -> dict[str, np.ndarray]:
        return {key: value[index] for key, value in self._layout.items()}

    def examples(self, *, shuffle, repeat, input_context=None, seed=None):
        indices = tf.data.Dataset.range(self.num_examples)
        dataset = tf.data.Dataset.zip(indices, tf.data.Dataset.from_tensor_slices(self._layout))
        dataset = shard_for_input_pipeline(dataset, input_context)
        if shuffle:
            dataset = dataset.shuffle(self.num_examples, seed=seed)
        if repeat:
            dataset = dataset.repeat()
        return dataset.map(self._example, num_parallel_calls=tf.data.AUTOTUNE)

    # --- writing --------------------------------------------------------------------------------

    def write(self, output_prefix: str | Path, num_shards: int = 1) -> ConversionSummary:
        """Writes the dataset as TFRecords PREFIX-*.tfrecord (with the masks when `with_masks`)
        and its COCO JSON as PREFIX.json."""
        records = (
            PreparedRecord(self.annotations(i), self._encoded(i),
                           mask=encode_mask(self.render_mask(i)) if self.with_masks else None)
            for i in range(self.num_examples)
        )
        summary = write_tfrecords(
            records, output_prefix, num_shards, SYNTHETIC_CLASS_NAMES, total=self.num_examples
        )
        json_path = Path(f"{output_prefix}.json")
        write_file(json_path, json.dumps(self.coco_groundtruth()), "COCO JSON")
        summary.files.append(str(json_path))
        return summary

    def _encoded(self, index: int) -> EncodedImage:
        png = tf.io.encode_png(self.render(index)).numpy()
        return EncodedImage(png, "png", self.height, self.width)


def _shape_mask(class_id, box, rows, cols) -> tf.Tensor:
    """Pixels of the shape inscribed in `box`: those whose square overlaps the shape.

    Overlap (not pixel centres) makes each shape reach all four sides of its box.
    """
    ymin, xmin, ymax, xmax = tf.unstack(box)
    in_box = (rows >= ymin) & (rows < ymax) & (cols >= xmin) & (cols < xmax)
    center_y, center_x = (ymin + ymax) / 2, (xmin + xmax) / 2
    half_height, half_width = (ymax - ymin) / 2, (xmax - xmin) / 2
    # Circle: the point of the pixel square nearest the centre lies inside.
    nearest_y = tf.minimum(tf.maximum(center_y, rows), rows + 1)
    nearest_x = tf.minimum(tf.maximum(center_x, cols), cols + 1)
    circle = (
        ((nearest_y - center_y) / half_height) ** 2 + ((nearest_x - center_x) / half_width) ** 2 < 1
    )
    # Triangle, apex at the top centre: the row's widest extent (its bottom edge) overlaps.
    row_half_width = half_width * (tf.minimum(rows + 1, ymax) - ymin) / (ymax - ymin)
    triangle = (cols < center_x + row_half_width) & (cols + 1 > center_x - row_half_width)
    shapes = tf.stack([tf.zeros_like(in_box), circle & in_box, in_box, triangle & in_box])
    return tf.gather(shapes, class_id)
