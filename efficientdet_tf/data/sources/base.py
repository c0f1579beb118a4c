"""Dataset sources: where decoded examples come from.

TFRecords and annotations held in memory beside an image folder are here; the sources read straight
from annotation files build on the latter (COCO JSON in `coco`, VOC XML folders in `voc_folder`,
CSV files in `csv_annotations`), and the synthetic dataset is in `synthetic`.

A source yields decoded examples (see `tfrecord_format`: image, source_id, boxes, classes,
is_crowd, areas, and segmentation_mask where it has masks and is asked for them) and owns what
only it can do cheaply: sharding over input pipelines, shuffling files or indices, repeating, and
dropping examples whose image (or mask) cannot be decoded.
"""

from __future__ import annotations

import abc
import functools
import logging
from pathlib import Path

import numpy as np
import tensorflow as tf

from efficientdet_tf.data.formats.annotations import ImageAnnotations, to_coco_json
from efficientdet_tf.data.formats.images import decode_image
from efficientdet_tf.data.formats.masks import check_mask_fits, read_mask_in_graph
from efficientdet_tf.data.formats.tfrecord_format import parse_example

log = logging.getLogger(__name__)

# The official shuffle buffer of records after interleaving the (shuffled) files.
_RECORD_SHUFFLE_BUFFER = 64


class Source(abc.ABC):
    """A dataset of decoded examples."""

    #: Number of examples when known without reading the data, else None.
    num_examples: int | None = None
    #: Largest class id in the data when known without reading it, else None.
    max_class_id: int | None = None
    #: {class id: name} when the source names its classes, else None.
    class_names: dict[int, str] | None = None

    @abc.abstractmethod
    def examples(
        self,
        *,
        shuffle: bool,
        repeat: bool,
        input_context: tf.distribute.InputContext | None = None,
        seed: int | None = None,
    ) -> tf.data.Dataset:
        """Decoded examples, this input pipeline's shard of them."""

    def count_examples(self) -> int:
        """`num_examples`, or the examples counted by reading the data once when not known."""
        if self.num_examples is not None:
            return self.num_examples
        examples = self.examples(shuffle=False, repeat=False)
        return int(examples.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))

    def coco_groundtruth(self) -> dict | None:
        """The ground truth as a COCO detection JSON dict, when the source has one."""
        return None


def shard_for_input_pipeline(
    dataset: tf.data.Dataset, input_context: tf.distribute.InputContext | None
) -> tf.data.Dataset:
    """Every `num_input_pipelines`-th element, starting at this pipeline's id."""
    if input_context is None or input_context.num_input_pipelines <= 1:
        return dataset
    return dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def skip_undecodable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Drops examples whose decoding failed (corrupt or truncated image), logging each one."""
    return dataset.ignore_errors(log_warning=True)


class TFRecordSource(Source):
    """TFRecord files in the official layout, from one or more comma-separated glob patterns;
    `with_masks` reads their segmentation masks too (records without one are skipped);
    `regenerate_source_id` replaces the records' source ids by a hash of their image bytes."""

    def __init__(self, file_pattern: str | list[str], with_masks: bool = False,
                 regenerate_source_id: bool = False):
        self.with_masks = with_masks
        self.regenerate_source_id = regenerate_source_id
        patterns = file_pattern.split(",") if isinstance(file_pattern, str) else list(file_pattern)
        self.files = []
        for pattern in (p.strip() for p in patterns):
            matched = tf.io.gfile.glob(pattern)
            if not matched:
                raise FileNotFoundError(
                    f"No TFRecord files match {pattern!r}: check the path, or give a glob such as "
                    "'/data/coco/train-*.tfrecord'."
                )
            self.files += sorted(matched)
        log.info("Reading %d TFRecord files from %s", len(self.files), file_pattern)

    def count_examples(self) -> int:
        """The records in the files (read, not decoded)."""
        records = tf.data.TFRecordDataset(self.files)
        return int(records.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))

    def examples(self, *, shuffle, repeat, input_context=None, seed=None):
        files = tf.data.Dataset.from_tensor_slices(self.files)
        num_pipelines = input_context.num_input_pipelines if input_context else 1
        # Shard whole files when each pipeline gets at least one; else shard the records.
        shard_files = len(self.files) >= num_pipelines
        if shard_files:
            files = shard_for_input_pipeline(files, input_context)
        if shuffle:
            files = files.shuffle(len(self.files), seed=seed)
        if repeat:
            files = files.repeat()
        records = files.interleave(
            lambda path: tf.data.TFRecordDataset(path).prefetch(1),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        if not shard_files:
            records = shard_for_input_pipeline(records, input_context)
        if shuffle:
            records = records.shuffle(_RECORD_SHUFFLE_BUFFER, seed=seed)
        parse = functools.partial(parse_example, with_masks=self.with_masks,
                                  regenerate_source_id=self.regenerate_source_id)
        return skip_undecodable(records.map(parse, num_parallel_calls=tf.data.AUTOTUNE))


class AnnotatedImagesSource(Source):
    """Annotations held in memory, with their images read from a folder in the input pipeline.

    Subclasses parse and clean the annotations once (file names relative to `image_dir`, boxes
    in pixels, class ids within `class_names`); this class feeds them to tf.data. With
    `mask_dir`, each image has the segmentation mask `mask_path` names (see `masks`).
    """

    def __init__(
        self,
        images: list[ImageAnnotations],
        image_dir: str | Path,
        class_names: dict[int, str],
        mask_dir: str | Path | None = None,
    ):
        self.images = images
        self.image_dir = Path(image_dir)
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        self.class_names = class_names
        self.num_examples = len(images)
        classes = [c for image in images for c in image.classes]
        self.max_class_id = int(max(classes)) if classes else None

    def coco_groundtruth(self) -> dict:
        return to_coco_json(self.images, self.class_names)

    def _columns(self) -> dict[str, tf.Tensor]:
        def ragged(values, dtype, inner_shape=()):
            return tf.RaggedTensor.from_row_lengths(
                np.concatenate(values).astype(dtype).reshape(-1, *inner_shape),
                [len(v) for v in values],
            )

        columns = {
            "path": tf.constant([str(self.image_dir / image.file_name) for image in self.images]),
            "source_id": tf.constant([image.image_id for image in self.images], tf.int64),
            "boxes": ragged([image.normalized_boxes() for image in self.images], np.float32, (4,)),
            "classes": ragged([image.classes for image in self.images], np.int32),
            "is_crowd": ragged([image.is_crowd.astype(bool) for image in self.images], bool),
            "areas": ragged([image.areas for image in self.images], np.float32),
        }
        if self.mask_dir is not None:
            columns["mask_path"] = tf.constant(
                [str(self.mask_path(image)) for image in self.images])
        return columns

    def mask_path(self, image: ImageAnnotations) -> Path:
        """The mask of `image`: the PNG of its file name's stem in `mask_dir`."""
        return self.mask_dir / f"{Path(image.file_name).stem}.png"

    def examples(self, *, shuffle, repeat, input_context=None, seed=None):
        dataset = shard_for_input_pipeline(
            tf.data.Dataset.from_tensor_slices(self._columns()), input_context
        )
        if shuffle:
            dataset = dataset.shuffle(len(self.images), seed=seed)
        if repeat:
            dataset = dataset.repeat()
        return skip_undecodable(dataset.map(_read_example, num_parallel_calls=tf.data.AUTOTUNE))


class TFDatasetSource(Source):
    """A `tf.data.Dataset` of unbatched `(image, {"boxes": ..., "classes": ...})`: uint8 images
    [H, W, 3], float boxes [N, 4] (ymin, xmin, ymax, xmax) in pixels, int class ids [N].

    Images are numbered 1, 2, ... in dataset order (their COCO image ids in evaluation); shuffling
    uses a buffer of `shuffle_buffer` examples.
    """

    def __init__(self, dataset: tf.data.Dataset, shuffle_buffer: int = _RECORD_SHUFFLE_BUFFER):
        _check_image_and_boxes_spec(dataset.element_spec)
        self.dataset = dataset
        self.shuffle_buffer = shuffle_buffer
        cardinality = int(dataset.cardinality())
        self.num_examples = cardinality if cardinality >= 0 else None

    def examples(self, *, shuffle, repeat, input_context=None, seed=None):
        dataset = shard_for_input_pipeline(self.dataset.enumerate(start=1), input_context)
        if shuffle:
            dataset = dataset.shuffle(self.shuffle_buffer, seed=seed)
        if repeat:
            dataset = dataset.repeat()
        return dataset.map(_decoded_example, num_parallel_calls=tf.data.AUTOTUNE)


def _check_image_and_boxes_spec(spec) -> None:
    expected = ("a tf.data.Dataset of unbatched (image, {'boxes': ..., 'classes': ...}): uint8 "
                "[height, width, 3], float [N, 4] (ymin, xmin, ymax, xmax in pixels), int [N]")
    if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict)
            and {"boxes", "classes"} <= spec[1].keys()):
        raise ValueError(f"Expected {expected}; got elements {spec}.")
    image, objects = spec
    if image.shape.rank != 3 or objects["boxes"].shape.rank != 2 or image.dtype != tf.uint8:
        raise ValueError(f"Expected {expected}; got image {image} and boxes {objects['boxes']} "
                         "(batched? then call .unbatch() first).")


def _decoded_example(index, element) -> dict[str, tf.Tensor]:
    image, objects = element
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    boxes = tf.reshape(tf.cast(objects["boxes"], tf.float32), [-1, 4])
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return {
        "image": image,
        "source_id": index,
        "boxes": boxes / tf.tile(size, [2]),
        "classes": tf.cast(tf.reshape(objects["classes"], [-1]), tf.int32),
        "is_crowd": tf.zeros(tf.shape(boxes)[:1], tf.bool),
        "areas": heights * widths,
    }


def _read_example(columns: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    paths = ("path", "mask_path")
    example = {key: tf.convert_to_tensor(value) for key, value in columns.items()
               if key not in paths}
    example["image"] = decode_image(tf.io.read_file(columns["path"]))
    example["boxes"] = tf.ensure_shape(example["boxes"], [None, 4])
    if "mask_path" in columns:
        mask = read_mask_in_graph(columns["mask_path"])
        example["segmentation_mask"] = check_mask_fits(mask, example["image"])
    return example
