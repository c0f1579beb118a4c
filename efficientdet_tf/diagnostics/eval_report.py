"""The evaluation report: what the COCO numbers are made of, per class and in pictures.

    write_eval_report(coco_eval, class_names, report_dir, images={image_id: pixels})

from a pycocotools `COCOeval` after `evaluate()` and `accumulate()` (it holds the ground truth,
the detections and the accumulated precision) writes to report_dir:
  per_class.csv         class id, class, AP, AP50, AP75 (as COCO's 'AP_/<class>': the mean of
                        the class's accumulated precision at all areas and 100 detections),
                        ground-truth boxes, detections.
  pr_curves.png         precision against recall of each class at IoU 0.5: pycocotools'
                        eval['precision'][0, :, class, 0, -1] against params.recThrs.
  confusion_matrix.png  and .csv: ground-truth classes (rows) against detected classes
                        (columns), background last, at IoU `IOU_THRESHOLD` and score
                        `SCORE_THRESHOLD` (see `confusion_matrix`).
  predictions.png       the given images with ground truth (green) and detections scoring at
                        least `SCORE_THRESHOLD` (red).
With the segmentation head, `write_segmentation_report` writes segmentation_per_class.csv and
segmentation_masks.png.
"""

from __future__ import annotations

import collections
import csv
import os
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from efficientdet_tf.diagnostics.plotting import new_figure, save_figure
from efficientdet_tf.inference.draw import DEFAULT_MIN_SCORE, draw_detections, overlay_mask
from efficientdet_tf.label_map import class_name
from efficientdet_tf.output_files import written_whole

IOU_THRESHOLD = 0.5
SCORE_THRESHOLD = DEFAULT_MIN_SCORE  # that of the drawn detections of --mode=infer
GROUNDTRUTH_COLOUR = (0, 200, 0)
DETECTION_COLOUR = (230, 25, 75)
BACKGROUND = "background"
PREDICTION_IMAGES = 8  # drawn in predictions.png
_GRID_COLUMNS = 4
# Indices into COCOeval.eval['precision'] [IoU, recall, class, area, max detections].
_IOU_50, _IOU_75, _ALL_AREAS, _MOST_DETECTIONS = 0, 5, 0, -1


def write_eval_report(coco_eval, names: dict[int, str], report_dir: str | os.PathLike,
                      images: dict[int, np.ndarray] | None = None) -> Path:
    """Writes the report (see the module docstring) and returns its directory."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    names = {**_category_names(coco_eval), **names}
    write_per_class(coco_eval, names, report_dir / "per_class.csv")
    plot_pr_curves(coco_eval, names, report_dir / "pr_curves.png")
    class_ids = list(coco_eval.params.catIds)
    matrix = confusion_matrix(_groundtruth(coco_eval), _detections(coco_eval), class_ids)
    labels = [class_name(names, c) for c in class_ids] + [BACKGROUND]
    write_confusion_matrix(matrix, labels, report_dir / "confusion_matrix.csv")
    plot_confusion_matrix(matrix, labels, report_dir / "confusion_matrix.png")
    if images:
        plot_predictions(coco_eval, names, images, report_dir / "predictions.png")
    return report_dir


def _category_names(coco_eval) -> dict[int, str]:
    return {c["id"]: c["name"] for c in coco_eval.cocoGt.dataset["categories"] if c.get("name")}


def _groundtruth(coco_eval) -> list[dict]:
    image_ids = set(coco_eval.params.imgIds)
    return [a for a in coco_eval.cocoGt.dataset["annotations"] if a["image_id"] in image_ids]


def _detections(coco_eval) -> list[dict]:
    return list(coco_eval.cocoDt.dataset["annotations"])


def class_average_precision(coco_eval, class_index: int, iou_index: int | None = None) -> float:
    """AP of one class (index into params.catIds) over all IoU thresholds, or at one; NaN for a
    class without ground truth."""
    precision = coco_eval.eval["precision"][:, :, class_index, _ALL_AREAS, _MOST_DETECTIONS]
    if iou_index is not None:
        precision = precision[iou_index]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")


def per_class_rows(coco_eval, names: dict[int, str]) -> list[dict]:
    """One row per class: id, name, AP, AP50, AP75, ground-truth boxes, detections."""
    groundtruth, detections = _groundtruth(coco_eval), _detections(coco_eval)
    rows = []
    for index, class_id in enumerate(coco_eval.params.catIds):
        rows.append({
            "class_id": class_id,
            "class": class_name(names, class_id),
            "AP": class_average_precision(coco_eval, index),
            "AP50": class_average_precision(coco_eval, index, _IOU_50),
            "AP75": class_average_precision(coco_eval, index, _IOU_75),
            "groundtruth_boxes": sum(1 for a in groundtruth if a["category_id"] == class_id
                                     and not a.get("iscrowd", 0)),
            "detections": sum(1 for d in detections if d["category_id"] == class_id),
        })
    return rows


def write_per_class(coco_eval, names: dict[int, str], path: Path) -> None:
    rows = per_class_rows(coco_eval, names)
    with written_whole(path, "Per-class table") as partial, open(partial, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["class_id"])
        writer.writeheader()
        for row in rows:
            writer.writerow({key: f"{value:.4f}" if isinstance(value, float) else value
                             for key, value in row.items()})


def pr_curves(coco_eval) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(recall thresholds [R], {class id: precision [R]}) at IoU 0.5, all areas, 100 detections,
    of the classes with ground truth: pycocotools' accumulated precision, not recomputed."""
    precision = coco_eval.eval["precision"][_IOU_50, :, :, _ALL_AREAS, _MOST_DETECTIONS]
    curves = {class_id: precision[:, index]
              for index, class_id in enumerate(coco_eval.params.catIds)
              if (precision[:, index] > -1).any()}
    return np.asarray(coco_eval.params.recThrs), curves


def plot_pr_curves(coco_eval, names: dict[int, str], path: Path) -> None:
    recall, curves = pr_curves(coco_eval)
    figure = new_figure(7, 5.5)
    axes = figure.add_subplot()
    for class_id, precision in curves.items():
        ap50 = float(precision[precision > -1].mean())
        axes.plot(recall, precision, label=f"{class_name(names, class_id)} (AP50 {ap50:.3f})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title("Precision-recall per class at IoU 0.5 (COCO, 100 detections per image)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="lower left")
    save_figure(figure, path)


def confusion_matrix(groundtruth: list[dict], detections: list[dict], class_ids: list[int],
                     iou_threshold: float = IOU_THRESHOLD,
                     score_threshold: float = SCORE_THRESHOLD) -> np.ndarray:
    """int [K + 1, K + 1]: ground-truth class (rows) against detected class (columns) for the K
    `class_ids`, background last. COCO dicts (bbox x, y, width, height; category_id; image_id;
    score).

    Per image, detections scoring at least `score_threshold` take, highest score first, the
    unmatched ground-truth box of any class they overlap most, when the IoU reaches
    `iou_threshold`; one left without a box counts in the background row. Ground-truth boxes
    left unmatched count in the background column. Crowd boxes are left out.
    """
    index = {class_id: i for i, class_id in enumerate(class_ids)}
    background = len(class_ids)
    matrix = np.zeros([background + 1, background + 1], np.int64)
    truth_of, found_of = collections.defaultdict(list), collections.defaultdict(list)
    for annotation in groundtruth:
        if not annotation.get("iscrowd", 0):
            truth_of[annotation["image_id"]].append(annotation)
    for detection in detections:
        if detection["score"] >= score_threshold:
            found_of[detection["image_id"]].append(detection)
    for image_id in truth_of.keys() | found_of.keys():
        truth = truth_of[image_id]
        found = sorted(found_of[image_id], key=lambda d: -d["score"])
        iou = np.zeros([len(found), len(truth)])
        if found and truth:
            iou = np.asarray(mask_utils.iou([d["bbox"] for d in found],
                                            [a["bbox"] for a in truth], [0] * len(truth)))
        matched = np.zeros(len(truth), bool)
        for row, detection in enumerate(found):
            overlaps = np.where(matched, -1.0, iou[row])
            best = int(np.argmax(overlaps)) if len(truth) else -1
            if best >= 0 and overlaps[best] >= iou_threshold:
                matched[best] = True
                matrix[index[truth[best]["category_id"]], index[detection["category_id"]]] += 1
            else:
                matrix[background, index[detection["category_id"]]] += 1
        for annotation, was_matched in zip(truth, matched):
            if not was_matched:
                matrix[index[annotation["category_id"]], background] += 1
    return matrix


def write_confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    with written_whole(path, "Confusion matrix") as partial, open(partial, "w",
                                                                   newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["ground truth \\ detected", *labels])
        for label, row in zip(labels, matrix.tolist()):
            writer.writerow([label, *row])


def plot_confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    size = 3 + 0.6 * len(labels)
    figure = new_figure(size + 1, size)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, label="boxes")
    ticks = range(len(labels))
    axes.set_xticks(ticks, labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set_xlabel("detected class")
    axes.set_ylabel("ground-truth class")
    axes.set_title(f"Confusion matrix (IoU ≥ {IOU_THRESHOLD}, score ≥ {SCORE_THRESHOLD})")
    threshold = matrix.max() / 2
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", fontsize="small",
                  color="white" if count > threshold else "black")
    save_figure(figure, path)


def plot_predictions(coco_eval, names: dict[int, str], images: dict[int, np.ndarray],
                     path: Path) -> None:
    """A grid of `images` ({image id: uint8 pixels}) with ground truth and detections."""
    columns = min(_GRID_COLUMNS, len(images))
    rows = -(-len(images) // columns)
    figure = new_figure(3 * columns, 3 * rows + 0.5)
    drawn = drawn_predictions(coco_eval, names, images)
    for number, (image_id, pixels) in enumerate(drawn.items(), start=1):
        axes = figure.add_subplot(rows, columns, number)
        axes.imshow(pixels)
        axes.set_title(f"image {image_id}", fontsize="small")
        axes.axis("off")
    figure.suptitle(f"Ground truth (green) and detections with score ≥ {SCORE_THRESHOLD} (red)")
    save_figure(figure, path)


def drawn_predictions(coco_eval, names: dict[int, str],
                      images: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """{image id: uint8 pixels} of `images` with their ground truth in green and their
    detections scoring at least `SCORE_THRESHOLD` in red."""
    truth_of, found_of = collections.defaultdict(list), collections.defaultdict(list)
    for annotation in _groundtruth(coco_eval):
        truth_of[annotation["image_id"]].append(annotation)
    for detection in _detections(coco_eval):
        found_of[detection["image_id"]].append(detection)
    drawn = {}
    for image_id, pixels in images.items():
        truth, found = truth_of[image_id], found_of[image_id]
        with_truth = draw_detections(pixels, _yxyx(truth), None, _classes(truth), names,
                                     colour=GROUNDTRUTH_COLOUR)
        drawn[image_id] = np.asarray(draw_detections(
            np.asarray(with_truth), _yxyx(found), np.array([d["score"] for d in found]),
            _classes(found), names, min_score=SCORE_THRESHOLD, colour=DETECTION_COLOUR))
    return drawn


def _yxyx(objects: list[dict]) -> np.ndarray:
    boxes = np.array([o["bbox"] for o in objects], np.float64).reshape(-1, 4)
    x, y, width, height = boxes.T
    return np.stack([y, x, y + height, x + width], axis=1)


def _classes(objects: list[dict]) -> np.ndarray:
    return np.array([o["category_id"] for o in objects], np.int64)


def write_segmentation_report(metrics: dict[str, float], report_dir: str | os.PathLike,
                              drawn: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = ()
                              ) -> None:
    """segmentation_per_class.csv, the IoU of each mask class ('IoU/<class id>' metrics), and
    segmentation_masks.png: `drawn` (network-input pixels, true mask, predicted mask) side by
    side."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    with written_whole(report_dir / "segmentation_per_class.csv", "Per-class table") as partial, \
            open(partial, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class_id", "IoU"])
        for name, value in metrics.items():
            if name.startswith("IoU/"):
                writer.writerow([name.removeprefix("IoU/"), f"{value:.4f}"])
    if drawn:
        plot_masks(drawn, report_dir / "segmentation_masks.png")


def plot_masks(drawn: list[tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    """Rows of (image, true mask over it, predicted mask over it)."""
    figure = new_figure(7.5, 2.5 * len(drawn) + 0.5)
    for row, (pixels, truth, predicted) in enumerate(drawn):
        for column, (title, image) in enumerate((
                ("image", pixels), ("true mask", overlay_mask(pixels, truth)),
                ("predicted mask", overlay_mask(pixels, predicted)))):
            axes = figure.add_subplot(len(drawn), 3, 3 * row + column + 1)
            axes.imshow(image)
            axes.set_title(title, fontsize="small")
            axes.axis("off")
    figure.suptitle("Segmentation at the network input (mask classes in the VOC colours)")
    save_figure(figure, path)
