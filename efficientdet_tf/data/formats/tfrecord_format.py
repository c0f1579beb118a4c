"""The tf.train.Example layout of the official EfficientDet TFRecords: writing and parsing.

Keys (as written by the official create_coco_tfrecord.py / create_pascal_tfrecord.py):
  image/encoded, image/format, image/filename, image/source_id, image/height, image/width,
  image/key/sha256, image/object/bbox/{ymin,xmin,ymax,xmax} (normalized to [0, 1]),
  image/object/class/label (1-based), image/object/class/text, image/object/is_crowd,
  image/object/area; for semantic segmentation (the keys of the TF DeepLab tooling)
  image/segmentation/class/encoded (a grayscale PNG of class indices, see `masks`) and
  image/segmentation/class/format ('png').

`parse_example` turns one serialized record into the decoded example every dataset source yields:
  image: uint8 [height, width, 3]
  source_id: int64 scalar (a hash of image/encoded with `regenerate_source_id`, as the official
    decoder's option of that name, for records whose source ids repeat)
  boxes: float32 [N, 4] normalized ymin, xmin, ymax, xmax
  classes: int32 [N], 1-based
  is_crowd: bool [N]
  areas: float32 [N], pixels
  segmentation_mask: uint8 [height, width], when parsed `with_masks`
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import tensorflow as tf

from efficientdet_tf.data.formats.annotations import BOX_COORDINATES, ImageAnnotations
from efficientdet_tf.data.formats.images import EncodedImage, decode_image
from efficientdet_tf.data.formats.masks import check_mask_fits, decode_mask

# Source ids that are empty or not decimal integers are hashed into the positive int32 range.
_SOURCE_ID_HASH_BUCKETS = 2**31 - 1


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.asarray(values, np.float32)))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=np.asarray(values, np.int64)))


def make_example(
    image: EncodedImage,
    annotations: ImageAnnotations,
    class_names: dict[int, str],
    mask: EncodedImage | None = None,
) -> tf.train.Example:
    """A tf.train.Example of one image and its (already cleaned) annotations, and its
    segmentation mask (`masks.encode_mask`) when given."""
    boxes = annotations.normalized_boxes()
    feature = {
        "image/encoded": _bytes([image.data]),
        "image/format": _bytes([image.format.encode()]),
        "image/filename": _bytes([annotations.file_name.encode()]),
        "image/source_id": _bytes([str(annotations.image_id).encode()]),
        "image/key/sha256": _bytes([hashlib.sha256(image.data).hexdigest().encode()]),
        "image/height": _ints([image.height]),
        "image/width": _ints([image.width]),
        "image/object/class/label": _ints(annotations.classes),
        "image/object/class/text": _bytes(
            [class_names.get(int(c), str(c)).encode() for c in annotations.classes]
        ),
        "image/object/is_crowd": _ints(annotations.is_crowd),
        "image/object/area": _floats(annotations.areas),
    }
    for column, key in enumerate(BOX_COORDINATES):
        feature[f"image/object/bbox/{key}"] = _floats(boxes[:, column])
    if mask is not None:
        feature[_MASK_KEY] = _bytes([mask.data])
        feature["image/segmentation/class/format"] = _bytes([mask.format.encode()])
    return tf.train.Example(features=tf.train.Features(feature=feature))


_MASK_KEY = "image/segmentation/class/encoded"
_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/source_id": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
    "image/object/area": tf.io.VarLenFeature(tf.float32),
    **{f"image/object/bbox/{key}": tf.io.VarLenFeature(tf.float32) for key in BOX_COORDINATES},
}


def parse_example(serialized: tf.Tensor, with_masks: bool = False,
                  regenerate_source_id: bool = False) -> dict[str, tf.Tensor]:
    """One serialized tf.train.Example -> the decoded example (see the module docstring).

    Missing `is_crowd` means no crowds; missing `area` means the box area. Raises (in the graph)
    on an undecodable image or unequal numbers of boxes and labels, and `with_masks` on a missing
    or undecodable mask or one whose size differs from the image's; the sources drop such records
    with a logged warning.
    """
    features = _FEATURES
    if with_masks:
        features = {**_FEATURES, _MASK_KEY: tf.io.FixedLenFeature((), tf.string)}
    parsed = tf.io.parse_single_example(serialized, features)
    dense = {key: tf.sparse.to_dense(value) if isinstance(value, tf.SparseTensor) else value
             for key, value in parsed.items()}
    image = decode_image(dense["image/encoded"])
    boxes = tf.stack([dense[f"image/object/bbox/{key}"] for key in BOX_COORDINATES], axis=-1)
    classes = tf.cast(dense["image/object/class/label"], tf.int32)
    num_objects = tf.shape(classes)[0]
    tf.debugging.assert_equal(
        tf.shape(boxes)[0], num_objects, message="record has unequal numbers of boxes and labels"
    )
    is_crowd = tf.cast(dense["image/object/is_crowd"], tf.bool)
    is_crowd = tf.cond(
        tf.size(is_crowd) > 0, lambda: is_crowd, lambda: tf.zeros([num_objects], tf.bool)
    )
    areas = dense["image/object/area"]
    areas = tf.cond(tf.size(areas) > 0, lambda: areas, lambda: _pixel_areas(boxes, image))
    example = {
        "image": image,
        "source_id": (_hashed(dense["image/encoded"]) if regenerate_source_id else
                      _source_id_to_int(dense["image/source_id"], dense["image/encoded"])),
        "boxes": tf.ensure_shape(boxes, [None, 4]),
        "classes": classes,
        "is_crowd": is_crowd,
        "areas": areas,
    }
    if with_masks:
        example["segmentation_mask"] = check_mask_fits(decode_mask(dense[_MASK_KEY]), image)
    return example


def _pixel_areas(normalized_boxes: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    heights = (normalized_boxes[:, 2] - normalized_boxes[:, 0]) * size[0]
    widths = (normalized_boxes[:, 3] - normalized_boxes[:, 1]) * size[1]
    return heights * widths


def _source_id_to_int(source_id: tf.Tensor, encoded_image: tf.Tensor) -> tf.Tensor:
    """The decimal source id as int64; else a hash of it (or of the image bytes when empty)."""
    is_number = tf.strings.regex_full_match(source_id, r"[0-9]{1,18}")
    hash_input = tf.where(tf.strings.length(source_id) > 0, source_id, encoded_image)
    return tf.cond(
        is_number,
        lambda: tf.strings.to_number(source_id, tf.int64),
        lambda: _hashed(hash_input),
    )


def _hashed(text: tf.Tensor) -> tf.Tensor:
    return tf.strings.to_hash_bucket_fast(text, _SOURCE_ID_HASH_BUCKETS)
