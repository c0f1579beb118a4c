r"""Converts a COCO detection JSON and its image folder to sharded TFRecords (official layout).

    python -m efficientdet_tf.data.converters.create_coco_tfrecord \
        --image_dir=/data/coco/train2017 \
        --object_annotations_file=/data/coco/annotations/instances_train2017.json \
        --output_file_prefix=/data/tfrecords/train --num_shards=32

Writes PREFIX-00000-of-00032.tfrecord ... and prints a summary: images and boxes written, images
skipped (unreadable, missing) and boxes clipped or dropped, by reason.

As the official converter, `--image_info_file` (a JSON of images only, such as COCO's
`image_info_test-dev2017.json`) gives the images to write instead, with the objects of
--object_annotations_file when that is given too, else none: records for `--mode=eval
--testdev_dir`, which writes their detections for the COCO evaluation server.
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
from efficientdet_tf.data.formats.annotations import ImageAnnotations
from efficientdet_tf.data.sources.coco import CocoJson

FLAGS = flags.FLAGS


def convert(
    annotation_file: str | Path | None,
    image_dir: str | Path,
    output_prefix: str | Path,
    num_shards: int = 32,
    num_workers: int = 1,
    num_images: int | None = None,
    image_info_file: str | Path | None = None,
) -> ConversionSummary:
    """Converts the images of `image_info_file` if given, else those of `annotation_file` (the
    first `num_images` if given), with the objects of `annotation_file`."""
    images, class_names = _images_and_class_names(annotation_file, image_info_file)
    if not Path(image_dir).is_dir():
        raise FileNotFoundError(f"Image folder {str(image_dir)!r} does not exist.")
    jobs = [(image, str(Path(image_dir) / image.file_name)) for image in images[:num_images]]
    records = prepare_records(jobs, num_workers)
    return write_tfrecords(records, output_prefix, num_shards, class_names, len(jobs))


def _images_and_class_names(
    annotation_file: str | Path | None, image_info_file: str | Path | None
) -> tuple[list[ImageAnnotations], dict[int, str]]:
    """The images to convert, each with its objects in `annotation_file` (none when that is
    None or does not list it), and the class names."""
    if image_info_file is None and annotation_file is None:
        raise ValueError("Give --object_annotations_file (a COCO instances JSON), "
                         "--image_info_file (a JSON of images only, e.g. COCO test-dev's), or "
                         "both.")
    if image_info_file is None:
        coco = CocoJson(annotation_file)
        return coco.images, coco.class_names
    info = CocoJson(image_info_file)
    if annotation_file is None:
        return info.images, info.class_names
    annotated = CocoJson(annotation_file)
    by_id = {image.image_id: image for image in annotated.images}
    return [by_id.get(image.image_id, image) for image in info.images], annotated.class_names


def define_flags() -> None:
    """The command-line flags (defined only when run as a program: both converters share names)."""
    flags.DEFINE_string("image_dir", None, "Folder of the images named in the JSON.")
    flags.DEFINE_string("object_annotations_file", None, "COCO detection annotation JSON.")
    flags.DEFINE_string("image_info_file", None,
                        "A JSON of the images to write (e.g. COCO's image_info_test-dev2017.json"
                        "), instead of those of --object_annotations_file; their objects from "
                        "that file when it is given, else none.")
    flags.DEFINE_string("output_file_prefix", None, "Output path prefix of the TFRecord shards.")
    flags.DEFINE_integer("num_shards", 32, "Number of TFRecord files.")
    flags.DEFINE_integer(
        "num_workers", os.cpu_count(), "Processes reading images; 1: no subprocess."
    )
    flags.DEFINE_integer("num_images", None, "Convert only the first N images of the JSON.")
    flags.mark_flags_as_required(["image_dir", "output_file_prefix"])
    flags.register_multi_flags_validator(
        ["object_annotations_file", "image_info_file"], lambda values: any(values.values()),
        message="Give --object_annotations_file, --image_info_file or both.")


def main(argv):
    del argv
    summary = convert(
        FLAGS.object_annotations_file,
        FLAGS.image_dir,
        FLAGS.output_file_prefix,
        FLAGS.num_shards,
        FLAGS.num_workers,
        FLAGS.num_images,
        FLAGS.image_info_file,
    )
    print(summary.report())


if __name__ == "__main__":
    define_flags()
    app.run(main)
