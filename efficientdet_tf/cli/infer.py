"""`--mode=infer`: detections on image files, drawn and saved, and written as JSON.

Runs --ckpt (a checkpoint), or --saved_model_dir (a SavedModel directory or a .tflite file).
An unreadable file is skipped: the others are still done and written, and the command exits
with status 1 after saying how many files failed and why.
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
from efficientdet_tf.cli.detection_flags import usage_errors
from efficientdet_tf.config import ConfigError
from efficientdet_tf.data.images import BadImageError, read_rgb_image
from efficientdet_tf.data.pipeline import source_from_spec
from efficientdet_tf.inference.draw import DEFAULT_MIN_SCORE, class_names, draw_detections
from efficientdet_tf.inference.loading import open_detector

DETECTIONS_FILE_NAME = "detections.json"

flags.DEFINE_string("input_image", None, "Image file glob, e.g. 'images/*.jpg', or images of "
                    "the synthetic dataset, e.g. 'synthetic:val:4'.")
flags.DEFINE_string("output_image_dir", None,
                    f"Where the drawn images and {DETECTIONS_FILE_NAME} go.")
flags.DEFINE_float("min_score_thresh", DEFAULT_MIN_SCORE,
                   "Detections scoring lower are neither drawn nor written.")


def run(flag_values) -> None:
    config = config_from_flags(flag_values)
    images = _input_images(flag_values.input_image, config)
    if not flag_values.output_image_dir:
        raise ConfigError("--mode=infer needs --output_image_dir.")
    model_path = _model_path(flag_values)
    output_dir = Path(flag_values.output_image_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    names = class_names(config)
    with usage_errors():
        detect = open_detector(model_path, config, flag_values.postprocess_mode)
    records, failures = {}, {}
    for label, read in images:
        try:
            image = read()
        except BadImageError as error:
            failures[label] = error.reason
            print(f"{label}: skipped, {error}", file=sys.stderr)
            continue
        detections = [np.asarray(field)[0] for field in detect(image[np.newaxis])]
        boxes, scores, classes = _kept(*detections, flag_values.min_score_thresh)
        draw_detections(image, boxes, scores, classes, names, min_score=0.0).save(
            output_dir / Path(label).name)
        records[label] = [
            {"box_yxyx": box.tolist(), "score": float(score), "class_id": int(class_id),
             "class_name": names.get(int(class_id), f"class {int(class_id)}")}
            for box, score, class_id in zip(boxes, scores, classes)
        ]
        print(f"{label}: {len(scores)} detections")
    (output_dir / DETECTIONS_FILE_NAME).write_text(json.dumps(records, indent=1))
    print(f"Images and {DETECTIONS_FILE_NAME} of {len(records)} images written to {output_dir}")
    if failures:
        reasons = collections.Counter(failures.values())
        print(f"{len(failures)} of {len(images)} images could not be read and were skipped ("
              + ", ".join(f"{count} {reason}" for reason, count in reasons.items()) + ")",
              file=sys.stderr)
        sys.exit(1)


def _input_images(pattern: str | None, config) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(label, reader) of each input image: the files of a glob, or the images of the synthetic
    dataset ('synthetic:val:4')."""
    if not pattern:
        raise ConfigError("--mode=infer needs --input_image, an image file, a glob, or "
                          "'synthetic:<split>:<count>'.")
    if pattern.startswith("synthetic"):
        source = source_from_spec(pattern, config)
        return [(source.annotations(i).file_name, functools.partial(source.render, i))
                for i in range(source.num_examples)]
    paths = sorted(tf.io.gfile.glob(pattern))
    if not paths:
        raise ConfigError(f"No files match --input_image={pattern!r}; check the path or glob.")
    return [(path, functools.partial(read_rgb_image, path)) for path in paths]


def _model_path(flag_values) -> str:
    if bool(flag_values.ckpt) == bool(flag_values.saved_model_dir):
        raise ConfigError("--mode=infer needs exactly one of --ckpt (a checkpoint) or "
                          "--saved_model_dir (a SavedModel directory or a .tflite file).")
    return flag_values.ckpt or flag_values.saved_model_dir


def _kept(boxes, scores, classes, count, min_score: float):
    """The detections of one image scoring at least `min_score`."""
    keep = (np.arange(len(scores)) < count) & (scores >= min_score)
    return boxes[keep], scores[keep], classes[keep]
