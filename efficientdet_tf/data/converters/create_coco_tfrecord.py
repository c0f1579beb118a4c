r"""Converts a COCO detection JSON and its image folder to sharded TFRecords (official layout).

    python -m efficientdet_tf.data.converters.create_coco_tfrecord \
        --image_dir=/data/coco/train2017 \
        --object_annotations_file=/data/coco/annotations/instances_train2017.json \
        --output_file_prefix=/data/tfrecords/train --num_shards=32

Writes PREFIX-00000-of-00032.tfrecord ... and prints a summary: images and boxes written, images
skipped (unreadable, missing) and boxes clipped or dropped, by reason.
"""

from __future__ import annotations

import os
from pathlib import Path

from absl import app, flags

from efficientdet_tf.data.converters.record_writer import (
    ConversionSummary,
    prepare_records,
    write_tfrecords,
)
from efficientdet_tf.data.sources.coco import CocoJson

FLAGS = flags.FLAGS


def convert(
    annotation_file: str | Path,
    image_dir: str | Path,
    output_prefix: str | Path,
    num_shards: int = 32,
    num_workers: int = 1,
    num_images: int | None = None,
) -> ConversionSummary:
    """Converts the images of `annotation_file` (the first `num_images` if given)."""
    coco = CocoJson(annotation_file)
    if not Path(image_dir).is_dir():
        raise FileNotFoundError(f"Image folder {str(image_dir)!r} does not exist.")
    images = coco.images[:num_images]
    jobs = [(image, str(Path(image_dir) / image.file_name)) for image in images]
    records = prepare_records(jobs, num_workers)
    return write_tfrecords(records, output_prefix, num_shards, coco.class_names, len(jobs))


def define_flags() -> None:
    """The command-line flags (defined only when run as a program: both converters share names)."""
    flags.DEFINE_string("image_dir", None, "Folder of the images named in the JSON.")
    flags.DEFINE_string("object_annotations_file", None, "COCO detection annotation JSON.")
    flags.DEFINE_string("output_file_prefix", None, "Output path prefix of the TFRecord shards.")
    flags.DEFINE_integer("num_shards", 32, "Number of TFRecord files.")
    flags.DEFINE_integer(
        "num_workers", os.cpu_count(), "Processes reading images; 1: no subprocess."
    )
    flags.DEFINE_integer("num_images", None, "Convert only the first N images of the JSON.")
    flags.mark_flags_as_required(["image_dir", "object_annotations_file", "output_file_prefix"])


def main(argv):
    del argv
    summary = convert(
        FLAGS.object_annotations_file,
        FLAGS.image_dir,
        FLAGS.output_file_prefix,
        FLAGS.num_shards,
        FLAGS.num_workers,
        FLAGS.num_images,
    )
    print(summary.report())


if __name__ == "__main__":
    define_flags()
    app.run(main)
