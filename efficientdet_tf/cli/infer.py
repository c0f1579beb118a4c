"""`--mode=infer`: detections and masks on image files, drawn and saved.

Runs --ckpt (a checkpoint), or --saved_model_dir (a SavedModel directory, or a .tflite, .onnx or
OpenVINO .xml file). Each image is saved under its name in --output_image_dir with what the heads
give drawn on it: the mask's classes in colour, then the boxes. The detections of all images go to
detections_by_image.json ({image name: [its detections]}; evaluation's detections.json is COCO's
results list); the masks to masks/<image name>.png, palette PNGs of class indices as Pascal VOC's.
An unreadable file is skipped: the others are still done and written, and the command exits with
status 1 after saying how many files failed and why.
"""

from __future__ import annotations

import collections
import functools
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
from absl import flags

from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import flagged_detector, usage_errors
from efficientdet_tf.config import ConfigError
from efficientdet_tf.data.formats.images import BadImageError, read_rgb_image
from efficientdet_tf.data.formats.masks import write_mask
from efficientdet_tf.data.pipeline import source_from_spec, spec_kind
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.inference.draw import DEFAULT_MIN_SCORE, draw_outputs
from efficientdet_tf.inference.image_detections import kept_detections, outputs_of_images
from efficientdet_tf.inference.segmentation_masks import SEGMENTATION_MASKS
from efficientdet_tf.label_map import class_names
from efficientdet_tf.output_files import require_writable_folder, write_file, written_whole

DETECTIONS_FILE_NAME = "detections_by_image.json"
MASKS_DIR_NAME = "masks"

flags.DEFINE_string("input_image", None,
                    "Image files, a glob such as 'images/*.jpg'; or the images of a dataset "
                    "spec as --val_file_pattern takes it, TFRecords aside (e.g. "
                    "'synthetic:val:4').")
flags.DEFINE_string("output_image_dir", None,
                    f"Where the drawn images, {DETECTIONS_FILE_NAME} and {MASKS_DIR_NAME}/ go.")
flags.DEFINE_float("min_score_thresh", DEFAULT_MIN_SCORE,
                   "Detections scoring lower are neither drawn nor written.")


def run(flag_values) -> None:
    config = config_from_flags(flag_values)
    images = _input_images(flag_values.input_image, config)
    if not flag_values.output_image_dir:
        raise ConfigError("--mode=infer needs --output_image_dir.")
    require_writable_folder(flag_values.output_image_dir, "--output_image_dir")
    detect = flagged_detector(flag_values, config, "--mode=infer")
    output_dir = Path(flag_values.output_image_dir)
    draw = _Drawing(config, output_dir, flag_values.min_score_thresh)
    failures = {}
    for label, read in images:
        try:
            image = read()
        except BadImageError as error:
            failures[label] = error.reason
            print(f"{label}: skipped, {error}", file=sys.stderr)
            continue
        outputs = outputs_of_images(detect(image[np.newaxis]))[0]
        print(f"{label}: {draw(label, image, outputs)}")
    print(draw.finish())
    if failures:
        reasons = collections.Counter(failures.values())
        print(f"{len(failures)} of {len(images)} images could not be read and were skipped ("
              + ", ".join(f"{count} {reason}" for reason, count in reasons.items()) + ")",
              file=sys.stderr)
        sys.exit(1)


class _Drawing:
    """Draws the outputs of each image and saves them; the detections of all go to one JSON."""

    def __init__(self, config, output_dir: Path, min_score: float):
        self.output_dir = output_dir
        self.min_score = min_score
        self.names = class_names(config)
        self.detections = {} if "object_detection" in config.heads else None
        self.masks_dir = output_dir / MASKS_DIR_NAME if "segmentation" in config.heads else None
        self.num_images = 0

    def __call__(self, label: str, image: np.ndarray, outputs: dict) -> str:
        """Saves the drawing (and mask) of one image's outputs; says what it found."""
        found, mask, detections = [], None, None
        if self.masks_dir is not None:
            mask = outputs[SEGMENTATION_MASKS]
            write_mask(mask, self.masks_dir / f"{Path(label).stem}.png")
            found.append(f"classes {sorted(set(np.unique(mask).tolist()) - {0})} in the mask")
        if self.detections is not None:
            detections = kept_detections(outputs, self.min_score, self.names)
            self.detections[label] = detections.records()
            found.insert(0, f"{len(detections.scores)} detections")
        with written_whole(self.output_dir / Path(label).name, "Drawn image") as partial:
            draw_outputs(image, detections, mask, self.names).save(partial)
        self.num_images += 1
        return ", ".join(found)

    def finish(self) -> str:
        """Writes the detections of all images; says what was written."""
        written = [f"{self.num_images} images"]
        if self.detections is not None:
            write_file(self.output_dir / DETECTIONS_FILE_NAME,
                       json.dumps(self.detections, indent=1), "Detections")
            written.append(DETECTIONS_FILE_NAME)
        if self.masks_dir is not None:
            written.append(f"their masks in {MASKS_DIR_NAME}/")
        return f"{', '.join(written)} written to {self.output_dir}"


def _input_images(pattern: str | None, config) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(label, reader) of each input image: the files of a glob, or the images of a dataset spec
    of a kind (`data.pipeline.spec_kind`; the synthetic dataset's drawn)."""
    if not pattern:
        raise ConfigError("--mode=infer needs --input_image: image files (a glob) or a dataset "
                          "spec such as 'synthetic:val:4'.")
    if spec_kind(pattern):
        with usage_errors():
            source = source_from_spec(pattern, config)
        if isinstance(source, SyntheticShapes):
            return [(source.annotations(i).file_name, functools.partial(source.render, i))
                    for i in range(source.num_examples)]
        paths = [source.image_dir / image.file_name for image in source.images]
        return [(str(path), functools.partial(read_rgb_image, path)) for path in paths]
    paths = sorted(tf.io.gfile.glob(pattern))
    if not paths:
        raise ConfigError(f"No files match --input_image={pattern!r}; check the path or glob.")
    return [(path, functools.partial(read_rgb_image, path)) for path in paths]
