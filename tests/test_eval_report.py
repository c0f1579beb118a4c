"""The evaluation report: per_class.csv against COCO's per-class APs, the PR curves against
pycocotools' accumulated precision, a hand-counted confusion matrix, the pictures, and
--report_dir through `ObjectDetector.evaluate`."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from small_models import FIVE_BLOCK_BACKBONE, TINY
from test_evaluation import as_detections

from efficientdet_tf.config.parsing import parse_overrides
from efficientdet_tf.diagnostics import eval_report
from efficientdet_tf.evaluation.coco_evaluator import PER_CLASS_PREFIX, CocoEvaluator
from efficientdet_tf.evaluation.model_evaluation import evaluate
from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.object_detector import ObjectDetector

NAMES = {1: "cat", 2: "dog"}
CAT_A, DOG_B, CAT_C = [10, 10, 30, 30], [50, 10, 30, 30], [10, 50, 30, 30]  # x, y, w, h
GROUNDTRUTH = {
    "images": [{"id": 1, "height": 96, "width": 96}, {"id": 2, "height": 96, "width": 96}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": CAT_A, "area": 900, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": DOG_B, "area": 900, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 1, "bbox": CAT_C, "area": 900, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
}
# Image 1: the cat found; the dog taken for a cat; a dog where there is nothing. Image 2: the cat
# found at IoU 0.53 (a true positive at IoU 0.5 only), scoring below the matrix's threshold.
DETECTIONS = {
    1: [{"bbox": CAT_A, "category_id": 1, "score": 0.9},
        {"bbox": [51, 11, 30, 30], "category_id": 1, "score": 0.8},
        {"bbox": [60, 60, 20, 20], "category_id": 2, "score": 0.7}],
    2: [{"bbox": [15, 55, 30, 30], "category_id": 1, "score": 0.3}],
}
# Rows: ground truth cat, dog, background; columns: detected cat, dog, background.
HAND_COUNTED = [[1, 0, 1],
                [1, 0, 0],
                [0, 1, 0]]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    evaluator = CocoEvaluator(GROUNDTRUTH, NAMES)
    for image_id, results in DETECTIONS.items():
        evaluator.add_detections([image_id], as_detections(results))
    metrics = evaluator.evaluate()
    images = {image_id: np.full([96, 96, 3], 128, np.uint8) for image_id in DETECTIONS}
    directory = tmp_path_factory.mktemp("report")
    eval_report.write_eval_report(evaluator.coco_eval, NAMES, directory, images)
    return evaluator.coco_eval, metrics, directory


def test_per_class_aps_equal_the_coco_per_class_metrics(evaluated):
    _, metrics, directory = evaluated
    rows = list(csv.DictReader((directory / "per_class.csv").open()))
    assert [row["class"] for row in rows] == ["cat", "dog"]
    for row in rows:
        assert float(row["AP"]) == pytest.approx(metrics[PER_CLASS_PREFIX + row["class"]],
                                                 abs=5e-5)
    assert [(row["groundtruth_boxes"], row["detections"]) for row in rows] == [("2", "3"),
                                                                               ("1", "1")]
    assert float(rows[0]["AP50"]) > float(rows[0]["AP75"]) > float(rows[1]["AP50"]) == 0


def test_pr_curves_are_pycocotools_precision_at_iou_50(evaluated):
    coco_eval, _, _ = evaluated
    recall, curves = eval_report.pr_curves(coco_eval)
    np.testing.assert_array_equal(recall, coco_eval.params.recThrs)
    for index, class_id in enumerate(coco_eval.params.catIds):
        np.testing.assert_array_equal(curves[class_id],
                                      coco_eval.eval["precision"][0, :, index, 0, 2])


def test_confusion_matrix_of_a_hand_made_case(evaluated):
    coco_eval, _, directory = evaluated
    detections = [{**d, "image_id": image_id} for image_id, found in DETECTIONS.items()
                  for d in found]
    matrix = eval_report.confusion_matrix(GROUNDTRUTH["annotations"], detections, [1, 2])
    np.testing.assert_array_equal(matrix, HAND_COUNTED)
    rows = list(csv.reader((directory / "confusion_matrix.csv").open()))
    assert rows[0] == ["ground truth \\ detected", "cat", "dog", "background"]
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == HAND_COUNTED


def test_the_pictures_open_with_their_sizes(evaluated):
    _, _, directory = evaluated
    sizes = {name: Image.open(directory / f"{name}.png").size
             for name in ("pr_curves", "confusion_matrix", "predictions")}
    assert sizes == {"pr_curves": (700, 550), "confusion_matrix": (580, 480),
                     "predictions": (600, 350)}


def tiny_hparams(overrides: str = "") -> dict:
    """TINY on the five-block backbone: each evaluation traces the network, cheaper smaller."""
    return {**parse_overrides(",".join(filter(None, [TINY, overrides]))), **FIVE_BLOCK_BACKBONE}


@pytest.fixture(scope="module")
def detector():
    keras.backend.clear_session()
    return ObjectDetector("efficientdet-d0", tiny_hparams())


def test_evaluate_writes_the_report_of_a_model(detector, tmp_path):
    metrics = detector.evaluate("synthetic:val:2", batch_size=2, report_dir=tmp_path)
    rows = list(csv.DictReader((tmp_path / "per_class.csv").open()))
    assert [row["class"] for row in rows] == ["circle", "square", "triangle"]
    for row in rows:
        assert float(row["AP"]) == pytest.approx(metrics[PER_CLASS_PREFIX + row["class"]],
                                                 abs=5e-5)
    assert Image.open(tmp_path / "predictions.png").size == (600, 350)


def test_validation_draws_images_in_tensorboard(detector, tmp_path):
    evaluate(Detector(detector.config, detector.network).compiled(), detector.config,
             "synthetic:val:2", batch_size=2, summary_writer=tmp_path, step=7)
    assert tensorboard_images(tmp_path) == {f"predictions/image_{i}": (7, (64, 64, 3))
                                            for i in (1, 2)}


def tensorboard_images(log_dir) -> dict[str, tuple[int, tuple]]:
    """{tag: (step, image shape)} of the image summaries in `log_dir`."""
    images = {}
    for path in log_dir.glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    # TF2 image summaries: width, height, then the PNG of each image.
                    png = tf.make_ndarray(value.tensor)[2]
                    images[value.tag] = (event.step, tuple(tf.io.decode_png(png).shape))
    return images


def test_a_segmentation_model_reports_its_iou_per_class_and_draws_masks(tmp_path):
    keras.backend.clear_session()
    segmenter = ObjectDetector("efficientdet-d0",
                               tiny_hparams("heads=segmentation,max_level=6,seg_num_classes=4"))
    metrics = evaluate(Detector(segmenter.config, segmenter.network).compiled(),
                       segmenter.config, "synthetic:val:2", batch_size=2, report_dir=tmp_path,
                       summary_writer=tmp_path / "logs", step=3)
    assert tensorboard_images(tmp_path / "logs") == {
        f"predicted_masks/image_{i}": (3, (64, 64, 3)) for i in (0, 1)}
    rows = list(csv.DictReader((tmp_path / "segmentation_per_class.csv").open()))
    assert [row["class_id"] for row in rows] == ["0", "1", "2", "3"]
    for row in rows:
        assert float(row["IoU"]) == pytest.approx(metrics[f"IoU/{row['class_id']}"], abs=5e-5,
                                                  nan_ok=True)
    assert Image.open(tmp_path / "segmentation_masks.png").size == (750, 550)
