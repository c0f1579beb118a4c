"""Semantic segmentation metrics from a confusion matrix accumulated over a whole set.

Convention of DeepLab and `keras.metrics.MeanIoU`: IoU_c = TP / (TP + FP + FN); a class that is
in neither the labels nor the predictions of the whole set (TP + FP + FN = 0) has no IoU (NaN in
`per_class_iou`) and is left out of the mean. Pixels labelled `ignore_label` count nowhere.
"""

from __future__ import annotations

import numpy as np


class SegmentationMetrics:
    """`update(predictions, labels)` per batch of class maps [B, H, W]; then `result()`."""

    def __init__(self, num_classes: int, ignore_label: int = 255):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.confusion = np.zeros((num_classes, num_classes), np.int64)  # [label, prediction]

    def update(self, predictions, labels) -> None:
        predictions = np.asarray(predictions).astype(np.int64).ravel()
        labels = np.asarray(labels).astype(np.int64).ravel()
        if predictions.shape != labels.shape:
            raise ValueError(
                f"Predictions ({predictions.size} pixels) and labels ({labels.size} pixels) differ "
                "in size: compare class maps of the same shape.")
        keep = labels != self.ignore_label
        predictions, labels = predictions[keep], labels[keep]
        out_of_range = (labels < 0) | (labels >= self.num_classes)
        if out_of_range.any():
            raise ValueError(
                f"Label {labels[out_of_range][0]} is neither a class id in [0, {self.num_classes}) "
                f"nor the ignore label {self.ignore_label}: check seg_num_classes and the masks.")
        self.confusion += np.bincount(
            labels * self.num_classes + predictions, minlength=self.num_classes ** 2
        ).reshape(self.num_classes, self.num_classes)

    def per_class_iou(self) -> np.ndarray:
        true_positives = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - true_positives
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, true_positives / union, np.nan)

    def result(self) -> dict[str, float]:
        """{"mIoU", "pixel_accuracy", "IoU/<class id>"...}; NaN where nothing was counted."""
        per_class = self.per_class_iou()
        total = self.confusion.sum()
        present = ~np.isnan(per_class)
        return {
            "mIoU": float(per_class[present].mean()) if present.any() else float("nan"),
            "pixel_accuracy": float(np.trace(self.confusion) / total) if total else float("nan"),
            **{f"IoU/{c}": float(iou) for c, iou in enumerate(per_class)},
        }
