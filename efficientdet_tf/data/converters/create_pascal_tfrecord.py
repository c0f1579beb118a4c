r"""Converts a Pascal VOC split to sharded TFRecords (official layout) and a COCO-style JSON.

    python -m efficientdet_tf.data.converters.create_pascal_tfrecord \
        --data_dir=/data/VOCdevkit/VOC2012 --set=val --output_path=/data/tfrecords/pascal_val

`data_dir` holds Annotations/, JPEGImages/ and ImageSets/Main/<set>.txt. With --segmentation,
the set is ImageSets/Segmentation/<set>.txt and each record carries its mask,
SegmentationClass/<id>.png (palette indices, 255 = boundary), under the TF DeepLab keys
image/segmentation/class/{encoded,format}; images without a usable mask (missing, unreadable,
of another size) are skipped and counted. Writes
OUTPUT_PATH-00000-of-NNNNN.tfrecord ..., OUTPUT_PATH.json (the same images and boxes as COCO
ground truth, for evaluation) and OUTPUT_PATH_label_map.yaml ({id: name}, usable as the config's
label_map), then prints a summary of what was written, skipped and changed.

Class ids come from --label_map ('voc' for the 20 VOC classes with their official ids, or a YAML /
JSON file of {id: name}); without it, from the class names found in the split, sorted, as 1..K.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from absl import app, flags

from efficientdet_tf.data.converters.record_writer import (
    ConversionSummary,
    prepare_records,
    write_tfrecords,
)
from efficientdet_tf.data.formats.annotations import to_coco_json
from efficientdet_tf.data.formats.pascal import (
    class_names_found,
    image_path,
    mask_path,
    parse_annotation,
    read_split,
    to_image_annotations,
)
from efficientdet_tf.label_map import read_label_map, write_label_map
from efficientdet_tf.output_files import write_file

FLAGS = flags.FLAGS


def convert(
    data_dir: str | Path,
    split: str,
    output_path: str | Path,
    label_map: str | None = None,
    ignore_difficult: bool = False,
    num_shards: int = 100,
    num_workers: int = 1,
    num_images: int | None = None,
    segmentation: bool = False,
) -> ConversionSummary:
    """Converts the split (of ImageSets/Segmentation with masks when `segmentation`); see the
    module docstring for the files written."""
    parsed, unreadable = [], []
    task = "Segmentation" if segmentation else "Main"
    for example_id in read_split(data_dir, split, task)[:num_images]:
        try:
            parsed.append(parse_annotation(data_dir, example_id))
        except ValueError as error:
            unreadable.append(str(error))
    class_names = read_label_map(label_map) if label_map else class_names_found(parsed)
    class_ids = {name: class_id for class_id, name in class_names.items()}

    jobs, left_out = [], []
    for image_id, annotation in enumerate(parsed, start=1):
        image, dropped = to_image_annotations(annotation, image_id, class_ids, ignore_difficult)
        masks = (str(mask_path(data_dir, annotation.example_id)),) if segmentation else ()
        jobs.append((image, str(image_path(data_dir, annotation)), *masks))
        left_out.append(dropped)
    records = prepare_records(jobs, num_workers)
    summary = write_tfrecords(records, output_path, num_shards, class_names, len(jobs))

    for dropped in left_out:
        summary.boxes_changed.update(dropped)
    if unreadable:
        summary.images_skipped["unreadable annotation XML"] += len(unreadable)
        summary.skipped_files += unreadable
    json_path, label_map_path = Path(f"{output_path}.json"), Path(f"{output_path}_label_map.yaml")
    write_file(json_path, json.dumps(to_coco_json(summary.written, class_names)), "COCO JSON")
    write_label_map(class_names, label_map_path)
    summary.files += [str(json_path), str(label_map_path)]
    return summary


def define_flags() -> None:
    """The command-line flags (defined only when run as a program: both converters share names)."""
    flags.DEFINE_string("data_dir", None, "Folder with Annotations/, JPEGImages/, ImageSets/Main/.")
    flags.DEFINE_string("set", "train", "Split: the name of a file ImageSets/Main/<set>.txt.")
    flags.DEFINE_string("output_path", None, "Output path prefix of the TFRecord shards and JSON.")
    flags.DEFINE_string("label_map", None, "'voc' or a YAML/JSON {id: name} file; default: found.")
    flags.DEFINE_boolean("ignore_difficult_instances", False, "Leave out objects marked difficult.")
    flags.DEFINE_integer("num_shards", 100, "Number of TFRecord files.")
    flags.DEFINE_integer(
        "num_workers", os.cpu_count(), "Processes reading images; 1: no subprocess."
    )
    flags.DEFINE_integer("num_images", None, "Convert only the first N images of the split.")
    flags.DEFINE_boolean("segmentation", False, "A segmentation set: ImageSets/Segmentation/"
                         "<set>.txt, with the masks of SegmentationClass/ in the records.")
    flags.mark_flags_as_required(["data_dir", "output_path"])


def main(argv):
    del argv
    summary = convert(
        FLAGS.data_dir,
        FLAGS.set,
        FLAGS.output_path,
        FLAGS.label_map,
        FLAGS.ignore_difficult_instances,
        FLAGS.num_shards,
        FLAGS.num_workers,
        FLAGS.num_images,
        FLAGS.segmentation,
    )
    print(summary.report())


if __name__ == "__main__":
    define_flags()
    app.run(main)
