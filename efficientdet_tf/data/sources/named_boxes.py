"""Datasets as people keep them: image files in a folder and, beside them, boxes with class names
(VOC XML files, CSV rows), read without a conversion step.

The `voc:` and `csv:` sources parse their files into `pascal.VocAnnotation`s (an image file name,
its size when known, boxes with class names) and hand them to `NamedBoxesSource`, which
- gives the class names ids: those of the label map when one is given, else 1..K in sorted order
  of the names found in all the files (so every part of a folder gets the same ids);
- keeps the training or the held-out part when asked (`HoldOut`);
- skips and counts images that are missing or unreadable, besides the files and rows the readers
  could not parse, and cleans the boxes as the converters do;
- says what it found and skipped (`report`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from pathlib import Path

from efficientdet_tf.data.formats.annotations import clean_boxes
from efficientdet_tf.data.formats.images import BadImageError, image_size
from efficientdet_tf.data.formats.pascal import (
    VocAnnotation,
    class_names_found,
    to_image_annotations,
)
from efficientdet_tf.data.sources.base import AnnotatedImagesSource
from efficientdet_tf.label_map import read_label_map

HOLD_OUT_PARTS = ("train", "val")
_EXAMPLES_SHOWN = 3  # skipped files named per reason in the report


@dataclasses.dataclass(frozen=True)
class HoldOut:
    """The `part` ('train' or 'val') of a dataset of which `percent` % is held out for validation.

    The held-out images are the round(N * percent / 100) images (at least 1, at most N - 1) whose
    file names have the smallest SHA-256 hashes: the same images on every run and machine whatever
    order the files are listed in. A training spec and a validation spec of the same folder thus
    split it alike, with no image in both.
    """

    part: str
    percent: float

    @classmethod
    def parse(cls, part: str, percent: str, spec: str) -> "HoldOut":
        """From the spec suffix ':<part>:<percent>%', e.g. ':val:10%'."""
        try:
            value = float(percent.removesuffix("%"))
        except ValueError:
            value = None
        if part not in HOLD_OUT_PARTS or not percent.endswith("%") or not value or value >= 100:
            raise ValueError(
                f"Dataset spec {spec!r}: the hold-out suffix must be ':train:<P>%' or "
                f"':val:<P>%' with 0 < P < 100, e.g. ':val:10%'; got ':{part}:{percent}'."
            )
        return cls(part, value)

    def keeps(self, file_names: list[str]) -> list[bool]:
        """Whether each image (by file name) is in this part."""
        ranked = sorted(set(file_names), key=lambda name: (_digest(name), name))
        count = min(max(round(len(ranked) * self.percent / 100), 1), len(ranked) - 1)
        held_out = set(ranked[:count])
        return [(name in held_out) == (self.part == "val") for name in file_names]

    def __str__(self):
        share = self.percent if self.part == "val" else 100 - self.percent
        return f"{self.part} part, {share:g}% of the images ({self.percent:g}% held out)"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def split_hold_out(parts: list[str], spec: str) -> tuple[list[str], HoldOut | None]:
    """Splits the ':<part>:<P>%' suffix (if any) off the ':'-separated parts of a dataset spec."""
    if len(parts) >= 2 and parts[-1].endswith("%"):
        return parts[:-2], HoldOut.parse(parts[-2], parts[-1], spec)
    return parts, None


@dataclasses.dataclass
class Skipped:
    """What could not be used, by reason, with the files (or rows) concerned."""

    by_reason: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list)
    )

    def add(self, reason: str, item: str) -> None:
        self.by_reason[reason].append(item)

    @property
    def count(self) -> int:
        return sum(len(items) for items in self.by_reason.values())

    def __str__(self):
        return "; ".join(
            f"{reason}: {len(items)} (e.g. {', '.join(items[:_EXAMPLES_SHOWN])})"
            for reason, items in sorted(self.by_reason.items())
        )


class NamedBoxesSource(AnnotatedImagesSource):
    """Images of `image_dir` with boxes whose classes are named; see the module docstring.

    Args:
      description: the dataset spec, to name the data in the report and in errors.
      annotations: one per image; `file_name` relative to `image_dir`; height and width 0 when
        unknown (then read from the image file).
      image_dir: the folder of the images.
      skipped: what the reader already left out (unparsable files or rows).
      label_map: the config's `label_map` (see `efficientdet_tf.label_map`), or None for the names
        found.
      hold_out: keep only this part of the images.
      boxes_normalized: whether boxes are fractions of the image size rather than pixels.
    """

    def __init__(
        self,
        description: str,
        annotations: list[VocAnnotation],
        image_dir: str | Path,
        *,
        skipped: Skipped,
        label_map=None,
        hold_out: HoldOut | None = None,
        boxes_normalized: bool = False,
    ):
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"Image folder {str(image_dir)!r} of {description!r} does "
                                    "not exist; give the folder that holds the images.")
        class_names = read_label_map(label_map) if label_map else class_names_found(annotations)
        if hold_out:
            keeps = hold_out.keeps([annotation.file_name for annotation in annotations])
            annotations = [a for a, keep in zip(annotations, keeps) if keep]
        self.description, self.hold_out, self.skipped = description, hold_out, skipped
        self.box_changes = collections.Counter()
        images = self._usable_images(annotations, image_dir, class_names, boxes_normalized)
        if not images:
            raise ValueError(f"{description}: no usable image"
                             + (f"; skipped {skipped.count}: {skipped}" if skipped.count else "."))
        super().__init__(images, image_dir, class_names)

    def _usable_images(self, annotations, image_dir, class_names, boxes_normalized):
        """The annotations whose image can be read, with class ids and clean boxes; counts the
        images skipped and the boxes dropped or clipped."""
        class_ids = {name: class_id for class_id, name in class_names.items()}
        images = []
        for annotation in annotations:
            try:
                annotation = _sized(annotation, image_dir, boxes_normalized)
            except BadImageError as error:
                self.skipped.add(error.reason, str(image_dir / annotation.file_name))
                continue
            image, dropped = to_image_annotations(
                annotation, len(images) + 1, class_ids, ignore_difficult=False
            )
            image, changed = clean_boxes(image)
            self.box_changes.update(dropped + changed)
            images.append(image)
        return images

    def report(self) -> str:
        """What was found and what was skipped, in a few lines."""
        num_boxes = sum(image.num_boxes for image in self.images)
        classes = ", ".join(f"{class_id} {name}" for class_id, name in self.class_names.items())
        lines = [f"{self.description}: {self.num_examples} images, {num_boxes} boxes, "
                 f"{len(self.class_names)} classes ({classes})"]
        if self.hold_out:
            lines.append(f"  {self.hold_out}")
        lines.append(f"  skipped {self.skipped.count}: {self.skipped}" if self.skipped.count
                     else "  skipped: nothing")
        if self.box_changes:
            lines.append("  boxes: " + ", ".join(
                f"{count} {reason}" for reason, count in self.box_changes.most_common()))
        return "\n".join(lines)


def _sized(annotation: VocAnnotation, image_dir: Path, boxes_normalized: bool) -> VocAnnotation:
    """The annotation with the image's size where it lacks one, and its boxes in pixels; raises
    `BadImageError` when the image is missing or unreadable."""
    height, width = image_size(image_dir / annotation.file_name)
    if boxes_normalized:
        scale = (height, width, height, width)
        objects = [dataclasses.replace(obj, box=tuple(v * s for v, s in zip(obj.box, scale)))
                   for obj in annotation.objects]
        return dataclasses.replace(annotation, height=height, width=width, objects=objects)
    if not annotation.height or not annotation.width:
        return dataclasses.replace(annotation, height=height, width=width)
    return annotation
