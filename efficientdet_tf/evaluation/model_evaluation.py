"""Running a model over an evaluation dataset: COCO metrics of its detections, mIoU of its masks.

One loop for every kind of model: the input pipeline pre-processes the images in batches, and the
model runs on them with `detect_preprocessed(network_inputs, image_scales)`: any
`inference.detector.ImageDetector`, a Keras network through `Detector(...).compiled()`, an
exported SavedModel or TFLite file through its runner (`inference.loading.open_exported`). Masks
are scored at the network input size, against the eval masks resized and padded as the images are
(padding is ignored).

Images without labels (COCO test-dev: an image_info JSON as a `coco:` spec, or TFRecords of
one) are not scored: with `testdev_dir`, their detections are written as the results file the
COCO evaluation server takes, under the official name, and zipped for upload.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from efficientdet_tf.data import batch_labels
from efficientdet_tf.data.formats.masks import IGNORE_LABEL
from efficientdet_tf.data.pipeline import build_dataset, source_from_spec
from efficientdet_tf.data.preprocess import to_pixels
from efficientdet_tf.diagnostics.eval_report import (
    PREDICTION_IMAGES,
    drawn_predictions,
    write_eval_report,
    write_segmentation_report,
)
from efficientdet_tf.evaluation.coco_evaluator import CocoEvaluator
from efficientdet_tf.evaluation.segmentation_metrics import SegmentationMetrics
from efficientdet_tf.inference.detector import (
    ImageDetector,
    detections_from_dict,
    require_outputs,
)
from efficientdet_tf.inference.draw import overlay_mask
from efficientdet_tf.inference.segmentation_masks import SEGMENTATION_MASKS
from efficientdet_tf.label_map import class_names
from efficientdet_tf.output_files import require_writable_folder, written_whole

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8
RESULTS_FILE_NAME = "detections.json"
# The official name of the test-dev results (coco_metric.py's); the server takes it zipped.
TESTDEV_RESULTS_FILE_NAME = "detections_test-dev2017_test_results.json"
TENSORBOARD_IMAGES = 4  # validation images drawn with their detections in TensorBoard


def evaluate(
    detector: ImageDetector,
    config,
    dataset,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    eval_samples: int | None = None,
    val_json_file: str | os.PathLike | None = None,
    summary_writer: tf.summary.SummaryWriter | str | os.PathLike | None = None,
    step: int | tf.Variable | None = None,
    results_file: str | os.PathLike | None = None,
    report_dir: str | os.PathLike | None = None,
    testdev_dir: str | os.PathLike | None = None,
) -> dict[str, float]:
    """COCO metrics of `detector` on `dataset`, and segmentation metrics for a model with the
    segmentation head.

    Args:
      detector: a network's `Detector(config, network, mode).compiled()`, or the runner of an
        exported SavedModel or TFLite file (`inference.loading.open_exported`).
      config: the model's config: its heads, image size and normalization.
      dataset: a dataset spec (TFRecord glob, 'coco:<annotations.json>:<image_dir>',
        'synthetic:val', see `data.pipeline`) or a `data.sources.base.Source`.
      batch_size: images per step; a last partial batch is evaluated too.
      eval_samples: evaluate only the first this many images (all when None).
      val_json_file: ground-truth COCO JSON; by default the dataset's own (COCO JSON, synthetic)
        or, for TFRecords, the ground truth the records carry.
      summary_writer: a TensorBoard writer, or a directory for one; the metrics are written as
        scalars named like the returned keys, at `step`, and the first `TENSORBOARD_IMAGES`
        images drawn with their ground truth and detections as images 'predictions/image_<id>'
        (with the segmentation head, their predicted masks: 'predicted_masks/image_<i>').
      results_file: where to write the detections as a COCO results JSON.
      report_dir: where to write the evaluation report (`diagnostics.eval_report`): per-class
        table, precision-recall curves, confusion matrix, drawn predictions.
      testdev_dir: for a dataset without labels (COCO test-dev): where to write its detections
        as COCO results (`testdev_files`: the JSON and its zip) instead of scoring them; the
        ground truth and the other outputs are then not given.

    Returns:
      With the detection head: {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'ARmax1', 'ARmax10',
      'ARmax100', 'ARs', 'ARm', 'ARl'} and 'AP_/<class name>' per class with ground truth in the
      evaluated images. With the segmentation head: 'mIoU', 'pixel_accuracy' and 'IoU/<class
      id>' (`segmentation_metrics`). With `testdev_dir`, none: {}.
    """
    if eval_samples is not None and eval_samples < 1:
        raise ValueError(f"eval_samples must be at least 1 (or None for all), got {eval_samples}.")
    if testdev_dir is not None:
        _check_testdev_arguments(config, testdev_dir, val_json_file=val_json_file,
                                 summary_writer=summary_writer, results_file=results_file,
                                 report_dir=report_dir)
        _write_testdev(detector, config, dataset, testdev_dir, batch_size, eval_samples)
        return {}
    source = source_from_spec(dataset, config)
    scorers = []
    if "object_detection" in config.heads:
        scorers.append(_CocoScorer(config, source, val_json_file))
    if "segmentation" in config.heads:
        scorers.append(_SegmentationScorer(config))
    _detect_all(detector, config, source, scorers, batch_size, eval_samples, dataset)
    metrics = {}
    for scorer in scorers:
        metrics.update(scorer.result(results_file))
    if summary_writer is not None:
        if not isinstance(summary_writer, tf.summary.SummaryWriter):
            summary_writer = tf.summary.create_file_writer(str(summary_writer))
        write_summaries(metrics, summary_writer, step)
        for scorer in scorers:
            scorer.write_image_summaries(summary_writer, step, source)
    if report_dir is not None:
        for scorer in scorers:
            scorer.write_report(report_dir, source)
        log.info("Evaluation report written to %s", report_dir)
    return metrics


def testdev_files(testdev_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The test-dev results JSON in `testdev_dir` and the zip of it to upload."""
    results = Path(testdev_dir) / TESTDEV_RESULTS_FILE_NAME
    return results, results.with_suffix(".zip")


def _check_testdev_arguments(config, testdev_dir, **others) -> None:
    """Refuses what has no meaning without labels, before any work."""
    if "object_detection" not in config.heads:
        raise ValueError("testdev_dir writes detections, and this model has no detection head.")
    given = [name for name, value in others.items() if value is not None]
    if given:
        raise ValueError(f"testdev_dir writes the detections of images without labels, unscored: "
                         f"leave out {', '.join(given)}.")
    require_writable_folder(testdev_dir, "testdev_dir")


def _write_testdev(detector, config, dataset, testdev_dir, batch_size, eval_samples) -> None:
    """The detections of `dataset` in `testdev_files(testdev_dir)`. Its images are read as a
    detection model's (no masks: test-dev has none, and a model's masks are not written)."""
    config = config.override({"heads": ["object_detection"]})
    detections = _TestdevDetections()
    _detect_all(detector, config, source_from_spec(dataset, config), [detections], batch_size,
                eval_samples, dataset)
    detections.write(testdev_dir)


def _detect_all(detector, config, source, scorers, batch_size, eval_samples, dataset) -> None:
    """Runs `detector` over the first `eval_samples` images of `source` (all when None), giving
    each batch's outputs to each of `scorers`."""
    batches = build_dataset(source, config, is_training=False, batch_size=batch_size)
    remaining, num_images = eval_samples, 0
    for images, labels in batches:
        if remaining is not None:
            images, labels = images[:remaining], tf.nest.map_structure(
                lambda x, remaining=remaining: x[:remaining], labels)
            remaining -= int(tf.shape(images)[0])
        num_images += int(tf.shape(images)[0])
        outputs = detector.detect_preprocessed(images, labels[batch_labels.IMAGE_SCALES])
        for scorer in scorers:
            scorer.add(outputs, labels, images)
        if remaining is not None and remaining <= 0:
            break
    log.info("Evaluated %d images of %s", num_images,
             dataset if isinstance(dataset, (str, os.PathLike)) else type(dataset).__name__)


class _CocoScorer:
    """COCO metrics of the detections."""

    def __init__(self, config, source, val_json_file):
        self.groundtruth = (_read_json(val_json_file) if val_json_file
                            else source.coco_groundtruth())
        self.names = class_names(config)
        self.evaluator = CocoEvaluator(self.groundtruth, self.names)

    def add(self, outputs, labels, images) -> None:
        self.evaluator.add_detections(labels[batch_labels.SOURCE_IDS],
                                      detections_from_dict(outputs))
        if self.groundtruth is None:
            self.evaluator.add_groundtruth(labels[batch_labels.SOURCE_IDS],
                                           labels[batch_labels.GROUNDTRUTH])

    def result(self, results_file) -> dict[str, float]:
        metrics = self.evaluator.evaluate()
        if results_file:
            self.evaluator.write_results(results_file)
        return metrics

    def write_image_summaries(self, writer, step, source) -> None:
        """The first images drawn with ground truth and detections, as TensorBoard images."""
        if self.evaluator.coco_eval is None:
            return
        images = _first_images(source, set(self.evaluator.image_ids), TENSORBOARD_IMAGES)
        with writer.as_default():
            for image_id, pixels in drawn_predictions(self.evaluator.coco_eval, self.names,
                                                      images).items():
                tf.summary.image(f"predictions/image_{image_id}", pixels[None],
                                 step=0 if step is None else step)
        writer.flush()

    def write_report(self, report_dir, source) -> None:
        if self.evaluator.coco_eval is None:
            log.warning("No detection at all: no evaluation report to write.")
            return
        images = _first_images(source, set(self.evaluator.image_ids), PREDICTION_IMAGES)
        write_eval_report(self.evaluator.coco_eval, self.names, report_dir, images)


class _TestdevDetections:
    """The detections of images without labels, written for the COCO evaluation server."""

    def __init__(self):
        self.evaluator = CocoEvaluator()

    def add(self, outputs, labels, images) -> None:
        self.evaluator.add_detections(labels[batch_labels.SOURCE_IDS],
                                      detections_from_dict(outputs))

    def write(self, testdev_dir) -> None:
        """The results JSON (`testdev_files`), then the zip of it."""
        results, archive = testdev_files(testdev_dir)
        self.evaluator.write_results(results)
        with written_whole(archive, "Test-dev zip") as partial:
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zipped:
                zipped.write(results, arcname=results.name)
        log.info("Detections of %d images written to %s and %s (upload the zip to the COCO "
                 "evaluation server)", len(set(self.evaluator.image_ids)), results, archive)


class _SegmentationScorer:
    """mIoU, pixel accuracy and per-class IoU over the whole set."""

    def __init__(self, config):
        self.config = config
        self.metrics = SegmentationMetrics(config.seg_num_classes, IGNORE_LABEL)
        self.drawn: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # for the report

    def add(self, outputs, labels, images) -> None:
        require_outputs(outputs, [SEGMENTATION_MASKS], "segmentation")
        predicted = np.asarray(outputs[SEGMENTATION_MASKS])
        truth = labels[batch_labels.SEGMENTATION_MASKS].numpy()
        self.metrics.update(predicted, truth)
        missing = PREDICTION_IMAGES - len(self.drawn)
        if missing > 0:
            pixels = to_pixels(images[:missing], self.config).numpy()
            self.drawn += list(zip(pixels, truth[:missing], predicted[:missing]))

    def result(self, results_file) -> dict[str, float]:
        return self.metrics.result()

    def write_image_summaries(self, writer, step, source) -> None:
        """The first images (network input) with their predicted masks, as TensorBoard images."""
        with writer.as_default():
            for index, (pixels, _, predicted) in enumerate(self.drawn[:TENSORBOARD_IMAGES]):
                tf.summary.image(f"predicted_masks/image_{index}",
                                 overlay_mask(pixels, predicted)[None],
                                 step=0 if step is None else step)
        writer.flush()

    def write_report(self, report_dir, source) -> None:
        write_segmentation_report(self.metrics.result(), report_dir, self.drawn)


def _first_images(source, image_ids: set[int], count: int) -> dict[int, np.ndarray]:
    """{image id: uint8 pixels} of the first `count` images of `source` among `image_ids`."""
    images = {}
    for example in source.examples(shuffle=False, repeat=False):
        image_id = int(example["source_id"])
        if image_id in image_ids:
            images[image_id] = example["image"].numpy()
        if len(images) == count:
            break
    return images


def _read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Ground-truth JSON {str(path)!r} does not exist (--val_json_file): give a COCO "
            "instances JSON, or leave it out to use the dataset's own ground truth."
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"Ground-truth JSON {path} is not valid JSON: {error}") from None


def write_summaries(
    metrics: dict[str, float], writer: tf.summary.SummaryWriter | str | os.PathLike, step
) -> None:
    """Writes each metric as a TensorBoard scalar at `step` (0 when None)."""
    if not isinstance(writer, tf.summary.SummaryWriter):
        writer = tf.summary.create_file_writer(str(writer))
    with writer.as_default():
        for name, value in metrics.items():
            tf.summary.scalar(name, value, step=0 if step is None else step)
    writer.flush()
