"""COCO detection JSON: reading it into `ImageAnnotations`, and a dataset source that trains and
evaluates straight from the JSON and its image folder, without converting to TFRecords.

A JSON that lists images only, as COCO's image_info files do (`image_info_test-dev2017.json`),
gives images without objects: their detections can be written for the COCO evaluation server
(`evaluation.model_evaluation.evaluate`'s `testdev_dir`), but there is no ground truth to score.
"""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path

import numpy as np

from efficientdet_tf.data.formats.annotations import ImageAnnotations, clean_boxes
from efficientdet_tf.data.sources.base import AnnotatedImagesSource

log = logging.getLogger(__name__)


class CocoJson:
    """A COCO detection annotation file: its raw dict, per-image annotations and class names."""

    def __init__(self, annotation_file: str | Path):
        self.path = Path(annotation_file)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"COCO annotation file {str(self.path)!r} does not exist; give the path of an "
                "instances JSON such as annotations/instances_val2017.json."
            )
        try:
            self.raw = json.loads(self.path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.path} is not valid JSON: {error}") from None
        missing = [key for key in ("images", "categories") if key not in self.raw]
        if missing:
            raise ValueError(
                f"{self.path} lacks the COCO detection keys {missing}; expected a JSON with "
                "'images', 'categories' and (but for an image_info file) 'annotations'."
            )
        #: False for a JSON of images only (an image_info file such as COCO test-dev's).
        self.labeled = "annotations" in self.raw
        self.class_names = {int(c["id"]): c["name"] for c in self.raw["categories"]}
        self.images = self._image_annotations()

    def _image_annotations(self) -> list[ImageAnnotations]:
        objects_by_image = collections.defaultdict(list)
        for annotation in self.raw.get("annotations", []):
            objects_by_image[annotation["image_id"]].append(annotation)
        return [_to_image_annotations(image, objects_by_image[image["id"]])
                for image in self.raw["images"]]


def _to_image_annotations(image: dict, objects: list[dict]) -> ImageAnnotations:
    boxes = np.array([o["bbox"] for o in objects], np.float32).reshape(-1, 4)
    x, y, width, height = boxes.T
    return ImageAnnotations(
        image_id=int(image["id"]),
        file_name=image["file_name"],
        height=int(image["height"]),
        width=int(image["width"]),
        boxes=np.stack([y, x, y + height, x + width], axis=-1),
        classes=[o["category_id"] for o in objects],
        is_crowd=[o.get("iscrowd", 0) for o in objects],
        areas=[o.get("area", o["bbox"][2] * o["bbox"][3]) for o in objects],
    )


class CocoJsonSource(AnnotatedImagesSource):
    """Examples read from a COCO annotation JSON and its image folder.

    Boxes are cleaned like the converters do (clipped to the image, empty ones dropped); images
    listed in the JSON but missing from `image_dir` are skipped with a warning.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path):
        self.coco = CocoJson(annotation_file)
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"Image folder {str(image_dir)!r} of {str(annotation_file)!r} does not exist."
            )
        super().__init__(
            self._existing_images_with_clean_boxes(image_dir), image_dir, self.coco.class_names
        )

    def _existing_images_with_clean_boxes(self, image_dir: Path) -> list[ImageAnnotations]:
        images, missing, box_changes = [], [], collections.Counter()
        for image in self.coco.images:
            if not (image_dir / image.file_name).is_file():
                missing.append(image.file_name)
                continue
            cleaned, changes = clean_boxes(image)
            images.append(cleaned)
            box_changes.update(changes)
        if missing and not images:
            raise FileNotFoundError(
                f"None of the {len(missing)} images of {self.coco.path} is in {image_dir} "
                f"(first: {missing[0]!r}); give the folder that holds the images."
            )
        if not images:
            raise ValueError(f"{self.coco.path} lists no images.")
        if missing:
            log.warning("%d images of %s are missing from %s and skipped, e.g. %s",
                        len(missing), self.coco.path, image_dir, missing[:5])
        for reason, count in box_changes.items():
            log.info("%s: %d boxes %s", self.coco.path, count, reason)
        return images

    def coco_groundtruth(self) -> dict:
        if not self.coco.labeled:
            raise ValueError(
                f"{self.coco.path} lists images only (no 'annotations'), as COCO's image_info "
                "files do: there is no ground truth to score. Write its detections for the COCO "
                "evaluation server instead: --mode=eval --testdev_dir=<folder> (in Python, "
                "evaluate(..., testdev_dir=...)).")
        return self.coco.raw
