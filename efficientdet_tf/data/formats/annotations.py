"""One image's box annotations as the dataset readers hold them, and the rule that cleans them.

COCO JSON, Pascal VOC XML, CSV and the synthetic generator all produce `ImageAnnotations`; the
TFRecord writer and the in-memory dataset sources consume them, and `to_coco_json` turns them into
COCO ground truth. Boxes are in pixels of the annotated image
size, [ymin, xmin, ymax, xmax] with edges at pixel borders (COCO convention: a box from x to
x + width).
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

# The order of box coordinates everywhere: in `ImageAnnotations.boxes`, the TFRecord
# `image/object/bbox/*` keys and the Pascal VOC `bndbox` elements read in this order.
BOX_COORDINATES = ("ymin", "xmin", "ymax", "xmax")


@dataclasses.dataclass
class ImageAnnotations:
    """The image file and the objects of one image.

    Attributes:
      image_id: positive integer id; becomes `image/source_id` and the COCO `image_id`.
      file_name: image path relative to the image directory.
      height, width: the annotated image size in pixels.
      boxes: float32 [N, 4] ymin, xmin, ymax, xmax in pixels.
      classes: int64 [N] class ids, 1-based.
      is_crowd: int64 [N] 0 or 1.
      areas: float32 [N] object areas in pixels (COCO `area`: the segment area; else the box area).
    """

    image_id: int
    file_name: str
    height: int
    width: int
    boxes: np.ndarray
    classes: np.ndarray
    is_crowd: np.ndarray
    areas: np.ndarray

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        self.is_crowd = np.asarray(self.is_crowd, np.int64).reshape(-1)
        self.areas = np.asarray(self.areas, np.float32).reshape(-1)
        counts = {len(self.boxes), len(self.classes), len(self.is_crowd), len(self.areas)}
        if len(counts) != 1:
            raise ValueError(
                f"Image {self.file_name!r}: boxes, classes, is_crowd and areas differ in length "
                f"({len(self.boxes)}, {len(self.classes)}, {len(self.is_crowd)}, "
                f"{len(self.areas)})."
            )

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)

    def normalized_boxes(self) -> np.ndarray:
        """Boxes divided by the image size: the TFRecord `image/object/bbox/*` values."""
        scale = np.array([self.height, self.width, self.height, self.width], np.float32)
        return self.boxes / scale

    def select(self, keep: np.ndarray) -> "ImageAnnotations":
        """A copy with only the objects where `keep` is true."""
        return dataclasses.replace(
            self,
            boxes=self.boxes[keep],
            classes=self.classes[keep],
            is_crowd=self.is_crowd[keep],
            areas=self.areas[keep],
        )


def clean_boxes(annotations: ImageAnnotations) -> tuple[ImageAnnotations, collections.Counter]:
    """Clips boxes to the image and drops those left without area or with non-finite values.

    A box partly outside the image is clipped (annotation tools often overshoot by a pixel); a box
    wholly outside, or with zero or negative height or width, cannot be learned and is dropped.
    Returns the cleaned annotations and the number of boxes clipped or dropped, by reason.
    """
    report = collections.Counter()
    boxes = annotations.boxes
    finite = np.all(np.isfinite(boxes), axis=1)
    report["dropped: non-finite coordinates"] += int(np.sum(~finite))
    limits = np.array([annotations.height, annotations.width] * 2, np.float32)
    clipped = np.clip(np.nan_to_num(boxes), 0.0, limits)
    has_area = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    report["dropped: zero area or outside the image"] += int(np.sum(finite & ~has_area))
    keep = finite & has_area
    report["clipped to the image"] += int(np.sum(np.any(clipped != boxes, axis=1) & keep))
    cleaned = dataclasses.replace(annotations, boxes=clipped).select(keep)
    return cleaned, +report  # unary plus drops zero counts


def to_coco_json(images: list[ImageAnnotations], class_names: dict[int, str]) -> dict:
    """A COCO detection JSON dict of `images` (bbox as [x, y, width, height] in pixels)."""
    image_entries, objects = [], []
    for image in images:
        image_entries.append({"id": image.image_id, "file_name": image.file_name,
                              "height": image.height, "width": image.width})
        for box, class_id, is_crowd, area in zip(
            image.boxes.tolist(), image.classes, image.is_crowd, image.areas
        ):
            ymin, xmin, ymax, xmax = box
            objects.append({
                "id": len(objects) + 1, "image_id": image.image_id, "category_id": int(class_id),
                "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "area": float(area),
                "iscrowd": int(is_crowd),
            })
    categories = [{"id": i, "name": name} for i, name in sorted(class_names.items())]
    return {"images": image_entries, "annotations": objects, "categories": categories}
