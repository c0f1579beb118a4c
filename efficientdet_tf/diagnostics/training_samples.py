"""Training samples as the network sees them: after the training pre-processing and
augmentation, with their boxes, class names and masks drawn."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from efficientdet_tf.data import batch_labels
from efficientdet_tf.data.batch_labels import GROUNDTRUTH_BOX, GROUNDTRUTH_CLASS
from efficientdet_tf.data.pipeline import ExampleParser
from efficientdet_tf.data.preprocess import to_pixels
from efficientdet_tf.data.sources.base import Source
from efficientdet_tf.inference.draw import draw_detections, overlay_mask
from efficientdet_tf.output_files import written_whole

SEED = 0


def write_samples(source: Source, config, names: dict[int, str], count: int,
                  directory: str | os.PathLike) -> list[Path]:
    """Writes `count` drawn training samples as directory/sample_<i>.png; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parser = ExampleParser(config, is_training=True)
    examples = source.examples(shuffle=True, repeat=True, seed=SEED).map(parser).take(count)
    paths = []
    for index, sample in enumerate(examples):
        path = directory / f"sample_{index:02d}.png"
        with written_whole(path, "Training sample") as partial:
            draw_sample(sample, config, names).save(partial)
        paths.append(path)
    return paths


def draw_sample(sample: dict[str, tf.Tensor], config, names: dict[int, str]):
    """One `ExampleParser` output drawn: pixels of the network input, boxes and class names (and
    the mask's classes in colour)."""
    pixels = to_pixels(sample["image"][None], config)[0].numpy()
    if batch_labels.SEGMENTATION_MASKS in sample:
        pixels = overlay_mask(pixels, sample[batch_labels.SEGMENTATION_MASKS].numpy())
    rows = sample[batch_labels.GROUNDTRUTH].numpy()
    rows = rows[rows[:, GROUNDTRUTH_CLASS] > 0]
    # groundtruth_data is in original-image pixels: divide by the image scale for input pixels.
    boxes = rows[:, GROUNDTRUTH_BOX] / float(sample[batch_labels.IMAGE_SCALES])
    return draw_detections(pixels, boxes, None, rows[:, GROUNDTRUTH_CLASS].astype(np.int64),
                           names)
