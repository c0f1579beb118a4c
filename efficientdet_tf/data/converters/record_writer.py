"""Writing images and annotations as sharded TFRecords: in parallel, with progress and a summary.

The converters hand over (annotations, image path[, segmentation mask path]) jobs; worker
processes read, check and re-encode the images (and masks) and clean the boxes (`prepare_record`),
and this process writes the records in job order, round-robin over the shards like the official
converters.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import multiprocessing
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import keras
import tensorflow as tf

from efficientdet_tf.data.formats.annotations import ImageAnnotations, clean_boxes
from efficientdet_tf.data.formats.images import BadImageError, EncodedImage, read_image_for_record
from efficientdet_tf.data.formats.masks import encode_mask, read_mask
from efficientdet_tf.data.formats.tfrecord_format import make_example
from efficientdet_tf.output_files import written_whole

log = logging.getLogger(__name__)

# Jobs a worker takes at a time: enough to amortize inter-process traffic, small enough to keep
# the progress bar moving.
_JOBS_PER_WORKER_TASK = 8


@dataclasses.dataclass
class PreparedRecord:
    """One image ready to write, or the reason it was skipped."""

    annotations: ImageAnnotations
    image: EncodedImage | None = None
    mask: EncodedImage | None = None  # the segmentation mask (`masks.encode_mask`), if any
    skip_reason: str | None = None
    skip_detail: str = ""
    box_changes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    image_notes: list[str] = dataclasses.field(default_factory=list)  # e.g. 'JPEG CMYK re-encoded'


@dataclasses.dataclass
class ConversionSummary:
    """What a conversion wrote, skipped and changed."""

    files: list[str] = dataclasses.field(default_factory=list)
    images_written: int = 0
    boxes_written: int = 0
    images_without_boxes: int = 0
    images_skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    boxes_changed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    image_notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    skipped_files: list[str] = dataclasses.field(default_factory=list)
    written: list[ImageAnnotations] = dataclasses.field(default_factory=list)

    def add(self, record: PreparedRecord) -> None:
        self.boxes_changed.update(record.box_changes)
        self.image_notes.update(record.image_notes)
        if record.skip_reason:
            self.images_skipped[record.skip_reason] += 1
            self.skipped_files.append(record.annotations.file_name)
            return
        self.written.append(record.annotations)
        self.images_written += 1
        self.boxes_written += record.annotations.num_boxes
        self.images_without_boxes += record.annotations.num_boxes == 0

    def report(self) -> str:
        lines = [
            f"Wrote {self.images_written} images with {self.boxes_written} boxes "
            f"to {len(self.files)} files ({self.images_without_boxes} images without boxes).",
        ]
        for title, counts in (
            ("Images skipped", self.images_skipped),
            ("Images converted or flagged", self.image_notes),
            ("Boxes clipped or dropped", self.boxes_changed),
        ):
            total = sum(counts.values())
            lines.append(f"{title}: {total}")
            lines += [f"  {count:6d}  {reason}" for reason, count in counts.most_common()]
        if self.skipped_files:
            shown, rest = self.skipped_files[:10], len(self.skipped_files) - 10
            more = f" and {rest} more" if rest > 0 else ""
            lines.append(f"Skipped files: {', '.join(shown)}{more}")
        return "\n".join(lines)


def prepare_record(job: tuple[ImageAnnotations, str] | tuple[ImageAnnotations, str, str]
                   ) -> PreparedRecord:
    """Reads and checks the image of `job` (annotations, image path[, segmentation mask path])
    and its mask, and cleans its boxes (runs in a worker process)."""
    annotations, image_path, *mask_path = job
    try:
        image = read_image_for_record(image_path)
        mask = _read_mask_for_record(mask_path[0], image) if mask_path else None
    except BadImageError as error:
        return PreparedRecord(annotations, skip_reason=error.reason, skip_detail=str(error))
    if min(annotations.height, annotations.width) <= 0:  # size not annotated: the image's
        annotations = dataclasses.replace(annotations, height=image.height, width=image.width)
    cleaned, box_changes = clean_boxes(annotations)
    notes = [f"{image.converted_from} re-encoded as PNG"] if image.converted_from else []
    if (image.height, image.width) != (annotations.height, annotations.width):
        # Boxes stay normalized by the annotated size, which is what they were drawn on.
        notes.append("image size differs from the annotated size (boxes kept relative to it)")
    return PreparedRecord(cleaned, image, mask, box_changes=box_changes, image_notes=notes)


def _read_mask_for_record(path: str, image: EncodedImage) -> EncodedImage:
    """The mask file's class indices as a record PNG; `BadImageError` when it cannot be read or
    its size differs from the image's."""
    mask = read_mask(path)
    if mask.shape != (image.height, image.width):
        raise BadImageError(path, "mask size differs from the image",
                            f"{mask.shape[0]}x{mask.shape[1]} vs {image.height}x{image.width}")
    return encode_mask(mask)


def prepare_records(
    jobs: Sequence[tuple[ImageAnnotations, str]], num_workers: int
) -> Iterator[PreparedRecord]:
    """`prepare_record` over `jobs`, in order, in `num_workers` processes (1: in this process)."""
    if num_workers <= 1:
        yield from map(prepare_record, jobs)
        return
    # 'spawn': forking a process that has started TensorFlow's threads can deadlock.
    with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
        yield from pool.imap(prepare_record, jobs, chunksize=_JOBS_PER_WORKER_TASK)


def shard_paths(output_prefix: str | Path, num_shards: int) -> list[str]:
    """The official shard names: PREFIX-00000-of-00032.tfrecord, ..."""
    return [f"{output_prefix}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def write_tfrecords(
    records: Iterable[PreparedRecord],
    output_prefix: str | Path,
    num_shards: int,
    class_names: dict[int, str],
    total: int | None = None,
) -> ConversionSummary:
    """Writes the records round-robin over `num_shards` files; shows progress; returns a summary.
    The shards are written whole (`output_files.written_whole`): a conversion that fails leaves
    the shards of an earlier one as they were."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be at least 1, got {num_shards}.")
    summary = ConversionSummary(files=shard_paths(output_prefix, num_shards))
    progress = keras.utils.Progbar(total, unit_name="image")
    with contextlib.ExitStack() as shards:
        partials = [shards.enter_context(written_whole(path, "TFRecord shard"))
                    for path in summary.files]
        _write_round_robin(records, partials, class_names, summary, progress)
    return summary


def _write_round_robin(records, paths, class_names, summary, progress) -> None:
    num_shards = len(paths)
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    try:
        for seen, record in enumerate(records, start=1):
            if record.skip_reason:
                log.warning("Skipped %s", record.skip_detail or record.skip_reason)
            else:
                example = make_example(record.image, record.annotations, class_names, record.mask)
                writers[summary.images_written % num_shards].write(example.SerializeToString())
            summary.add(record)
            progress.update(seen)
    finally:
        for writer in writers:
            writer.close()
