"""Evaluation: COCO metrics of detections (`CocoEvaluator`) and of a model (`evaluate`)."""

from efficientdet_tf.evaluation.coco_evaluator import METRIC_NAMES, CocoEvaluator
from efficientdet_tf.evaluation.model_evaluation import evaluate

__all__ = ["METRIC_NAMES", "CocoEvaluator", "evaluate"]
