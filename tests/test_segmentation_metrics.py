"""mIoU, per-class IoU and pixel accuracy from a confusion matrix over a whole set."""

import math

import numpy as np
import pytest

from efficientdet_tf.evaluation.segmentation_metrics import SegmentationMetrics


def test_metrics_equal_the_hand_computed_confusion_matrix():
    metrics = SegmentationMetrics(num_classes=4, ignore_label=255)
    # Two batches; rows are labels, the 255 pixel is predicted 3 and must count nowhere.
    metrics.update(predictions=[[[0, 0, 1], [1, 2, 3]]], labels=[[[0, 1, 1], [1, 2, 255]]])
    metrics.update(predictions=[[[2, 0]]], labels=[[[2, 2]]])
    # Confusion [label, prediction]: (0,0)=1, (1,0)=1, (1,1)=2, (2,2)=2, (2,0)=1; 7 pixels.
    np.testing.assert_array_equal(
        metrics.confusion, [[1, 0, 0, 0], [1, 2, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]])
    # IoU: class 0: 1 / (1 + 2 + 0) = 1/3; class 1: 2 / 3; class 2: 2 / 3; class 3 absent: NaN.
    result = metrics.result()
    assert result["IoU/0"] == pytest.approx(1 / 3)
    assert result["IoU/1"] == pytest.approx(2 / 3)
    assert result["IoU/2"] == pytest.approx(2 / 3)
    assert math.isnan(result["IoU/3"])
    assert result["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)


def test_labels_outside_the_classes_are_refused():
    metrics = SegmentationMetrics(num_classes=3)
    with pytest.raises(ValueError, match="Label 7 is neither a class id in \\[0, 3\\)"):
        metrics.update([[0, 1]], [[0, 7]])
