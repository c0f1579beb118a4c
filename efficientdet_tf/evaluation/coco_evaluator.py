"""COCO detection metrics with pycocotools: the 12 standard numbers and the AP of each class.

    evaluator = CocoEvaluator(groundtruth=coco_json_dict, class_names={1: 'person', ...})
    evaluator.add_detections(image_ids, detections)   # per batch
    metrics = evaluator.evaluate()                     # {'AP': ..., 'AP50': ..., 'AP_/person': ...}
    evaluator.write_results('detections.json')         # COCO results format

Ground truth is a COCO detection dict (an instances JSON), or is collected batch by batch from the
input pipeline's `groundtruth_data` with `add_groundtruth`. Only the images that received
detections (possibly none) are evaluated, so that a run cut short is scored on what it saw.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from efficientdet_tf.data.batch_labels import (
    GROUNDTRUTH_AREA,
    GROUNDTRUTH_BOX,
    GROUNDTRUTH_CLASS,
    GROUNDTRUTH_CROWD,
)
from efficientdet_tf.output_files import write_file

log = logging.getLogger(__name__)

# COCOeval.stats in order.
METRIC_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "ARmax1", "ARmax10", "ARmax100", "ARs", "ARm", "ARl",
)
PER_CLASS_PREFIX = "AP_/"


class CocoEvaluator:
    """Collects detections (and optionally ground truth) image by image; scores them with COCOeval.

    Args:
      groundtruth: a COCO detection dict ('images', 'annotations', 'categories'); None to collect
        it with `add_groundtruth`.
      class_names: {class id: name} for the per-class APs; defaults to the ground truth's category
        names, then to the ids.
    """

    def __init__(self, groundtruth: dict | None = None, class_names: dict[int, str] | None = None):
        self._groundtruth = copy.deepcopy(groundtruth) if groundtruth is not None else None
        self._collected_images, self._collected_objects = [], []
        self._class_names = dict(class_names or {})
        self._results: list[dict] = []
        self._image_ids: list[int] = []
        #: The pycocotools COCOeval of the last `evaluate` (None before, or without detections):
        #: its ground truth, detections and accumulated precision, for `diagnostics.eval_report`.
        self.coco_eval: COCOeval | None = None

    @property
    def image_ids(self) -> list[int]:
        """The ids of the images evaluated so far, in the order they came."""
        return list(self._image_ids)

    def add_detections(self, image_ids, detections) -> None:
        """Detections of a batch: `Detections` (boxes in original pixels, yxyx; 1-based classes)."""
        image_ids = _numpy(image_ids).reshape(-1)
        boxes, scores, classes, counts = (_numpy(value) for value in detections)
        for index, image_id in enumerate(image_ids.tolist()):
            self._image_ids.append(int(image_id))
            count = int(counts[index])
            for box, score, class_id in zip(
                boxes[index, :count], scores[index, :count], classes[index, :count]
            ):
                self._results.append({
                    "image_id": int(image_id),
                    "category_id": int(class_id),
                    "bbox": _yxyx_to_xywh(box),
                    "score": float(score),
                })

    def add_groundtruth(self, image_ids, groundtruth_data) -> None:
        """Ground truth of a batch: the pipeline's `groundtruth_data` [batch, max_objects, 7]
        (ymin, xmin, ymax, xmax in original pixels, is_crowd, area, class id; class -1 pads)."""
        if self._groundtruth is not None:
            raise ValueError("This evaluator was given its ground truth; add_groundtruth is for "
                             "collecting it from the input pipeline instead.")
        rows_of_images = _numpy(groundtruth_data)
        for image_id, rows in zip(_numpy(image_ids).reshape(-1).tolist(), rows_of_images):
            self._collected_images.append({"id": int(image_id)})
            for row in rows[rows[:, GROUNDTRUTH_CLASS] > 0]:
                self._collected_objects.append({
                    "id": len(self._collected_objects) + 1,
                    "image_id": int(image_id),
                    "category_id": int(row[GROUNDTRUTH_CLASS]),
                    "bbox": _yxyx_to_xywh(row[GROUNDTRUTH_BOX]),
                    "area": float(row[GROUNDTRUTH_AREA]),
                    "iscrowd": int(row[GROUNDTRUTH_CROWD]),
                })

    def evaluate(self) -> dict[str, float]:
        """The 12 COCO metrics and 'AP_/<class name>' of each class with ground truth."""
        if not self._image_ids:
            raise ValueError("No detections were added: nothing to evaluate.")
        coco_groundtruth, _ = _captured(_coco_from_dict, self._groundtruth_dict())
        unknown = set(self._image_ids) - set(coco_groundtruth.getImgIds())
        if unknown:
            raise ValueError(
                f"{len(unknown)} evaluated image ids are not in the ground truth (e.g. "
                f"{sorted(unknown)[:5]}): the ground-truth JSON does not belong to this dataset."
            )
        if not self._results:
            log.warning("No detection at all in %d images: every metric is 0.",
                        len(set(self._image_ids)))
            return {name: 0.0 for name in METRIC_NAMES}
        # loadRes adds keys to the dicts it gets: give it copies.
        coco_detections, _ = _captured(coco_groundtruth.loadRes, [dict(r) for r in self._results])
        coco_eval = COCOeval(coco_groundtruth, coco_detections, iouType="bbox")
        coco_eval.params.imgIds = sorted(set(self._image_ids))
        _, summary = _captured(_run, coco_eval)
        self.coco_eval = coco_eval
        log.info("COCO metrics on %d images:\n%s", len(coco_eval.params.imgIds), summary)
        metrics = dict(zip(METRIC_NAMES, (float(value) for value in coco_eval.stats)))
        metrics.update(self._per_class_ap(coco_eval, coco_groundtruth))
        return metrics

    def _groundtruth_dict(self) -> dict:
        if self._groundtruth is not None:
            return self._groundtruth
        class_ids = {o["category_id"] for o in self._collected_objects} | set(self._class_names)
        return {
            "images": self._collected_images,
            "annotations": self._collected_objects,
            "categories": [{"id": class_id} for class_id in sorted(class_ids)],
        }

    def _per_class_ap(self, coco_eval: COCOeval, coco_groundtruth: COCO) -> dict[str, float]:
        """AP over IoU 0.5:0.95, all areas, 100 detections, of each class that has ground truth."""
        names = {c["id"]: c.get("name") for c in coco_groundtruth.dataset["categories"]}
        names.update(self._class_names)
        # precision: [IoU thresholds, recall points, classes, area ranges, max detections]
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        per_class = {}
        for index, class_id in enumerate(coco_eval.params.catIds):
            values = precision[:, :, index]
            if (values > -1).any():
                name = names.get(class_id) or str(class_id)
                per_class[PER_CLASS_PREFIX + name] = float(values[values > -1].mean())
        return per_class

    def write_results(self, path: str | os.PathLike) -> Path:
        """Writes the detections as a COCO results JSON (loadable by COCO.loadRes), whole."""
        write_file(path, json.dumps(self._results), "COCO results")
        return Path(path)


def _numpy(value) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _yxyx_to_xywh(box) -> list[float]:
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return [xmin, ymin, xmax - xmin, ymax - ymin]


def _coco_from_dict(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _run(coco_eval: COCOeval) -> None:
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()


def _captured(function, *args) -> tuple[object, str]:
    """`function(*args)` and what it printed (pycocotools prints progress and its table)."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        result = function(*args)
    return result, output.getvalue()
