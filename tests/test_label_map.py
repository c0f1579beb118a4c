"""Class names: one rule (`label_map.class_names`) for every consumer of a model's names."""

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.evaluation.model_evaluation import evaluate
from efficientdet_tf.export.tflite_metadata import output_class_names
from efficientdet_tf.label_map import class_name, class_names

IMAGE_SIZE = 64
BOX = [8.0, 12.0, 40.0, 52.0]  # ymin, xmin, ymax, xmax in pixels


def test_a_label_map_names_its_classes_and_other_ids_are_numbered():
    config = get_config("efficientdet-d0", "num_classes=4,label_map=synthetic")
    names = class_names(config)
    assert names == {1: "circle", 2: "square", 3: "triangle"}
    assert [class_name(names, i) for i in (1, 4)] == ["circle", "class 4"]


def test_a_model_with_cocos_90_classes_and_no_label_map_has_cocos_names():
    names = class_names(get_config("efficientdet-d0"))
    assert (names[1], names[90]) == ("person", "toothbrush")
    assert class_name(names, 12) == "class 12"  # one of COCO's 10 unused ids
    assert class_names(get_config("efficientdet-d0", "num_classes=3")) == {}


def test_tflite_labels_are_the_names_of_the_0_based_output_classes():
    """An official COCO checkpoint exported for a phone says 'person', not 'class 1'."""
    labels = output_class_names(get_config("efficientdet-d0"))
    assert len(labels) == 90
    assert labels[:3] == ["person", "bicycle", "car"] and labels[11] == "class 12"
    synthetic = get_config("efficientdet-d0", "num_classes=4,label_map=synthetic")
    assert output_class_names(synthetic) == ["circle", "square", "triangle", "class 4"]


class _DetectsTheBox:
    """A stand-in for an exported model's runner: detects BOX as class 1 in every image."""

    def detect_preprocessed(self, images, image_scales):
        batch = int(tf.shape(images)[0])
        return {
            "detection_boxes": np.tile(np.array([[BOX]], np.float32), [batch, 1, 1]),
            "detection_scores": np.full([batch, 1], 0.9, np.float32),
            "detection_classes": np.ones([batch, 1], np.float32),
            "num_detections": np.ones([batch], np.int32),
        }


@pytest.mark.parametrize("overrides, metric", [
    ("", "AP_/person"),
    ("label_map=synthetic", "AP_/circle"),
])
def test_evaluations_per_class_metrics_are_named_by_the_models_class_names(overrides, metric):
    config = get_config("efficientdet-d0", f"image_size={IMAGE_SIZE},{overrides}")
    images = tf.data.Dataset.from_tensors((
        tf.zeros([IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8),
        {"boxes": tf.constant([BOX]), "classes": tf.constant([1])},
    )).repeat(2)
    metrics = evaluate(_DetectsTheBox(), config, images, batch_size=2)
    assert metrics[metric] == pytest.approx(1.0)
