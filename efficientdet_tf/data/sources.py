"""Dataset sources: where decoded examples come from (TFRecords here; COCO JSON, synthetic beside).

A source yields decoded examples (see `tfrecord_format`: image, source_id, boxes, classes,
is_crowd, areas) and owns what only it can do cheaply: sharding over input pipelines, shuffling
files or indices, repeating, and dropping examples whose image cannot be decoded.
"""

from __future__ import annotations

import abc

import tensorflow as tf
from absl import logging

from efficientdet_tf.data.tfrecord_format import parse_example

# The official shuffle buffer of records after interleaving the (shuffled) files.
_RECORD_SHUFFLE_BUFFER = 64


class Source(abc.ABC):
    """A dataset of decoded examples."""

    #: Number of examples when known without reading the data, else None.
    num_examples: int | None = None
    #: Largest class id in the data when known without reading it, else None.
    max_class_id: int | None = None

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
    """TFRecord files in the official layout, from one or more comma-separated glob patterns."""

    def __init__(self, file_pattern: str | list[str]):
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
        logging.info("Reading %d TFRecord files from %s", len(self.files), file_pattern)

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
        return skip_undecodable(records.map(parse_example, num_parallel_calls=tf.data.AUTOTUNE))
