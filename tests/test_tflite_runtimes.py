"""TFLite files run unchanged in MediaPipe's ObjectDetector, with the metadata it needs.

MediaPipe gets whole-pixel boxes and feeds the raw pixels itself; the images are at the network
size, so neither side resizes and both feed the same pixels. Each of MediaPipe's 10 best detections
must be one of our runner's: same class, score within 0.01, box IoU >= 0.9. Boxes crossing the
image's edge are left out: MediaPipe does not clip them to the image (it only moves a negative
origin to 0), our runner does, as the official post-processing does.
"""

import keras
import numpy as np
import pytest
import small_models
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.export import tflite_metadata
from efficientdet_tf.export.tflite import export_tflite
from efficientdet_tf.inference.detector import detections_from_dict
from efficientdet_tf.inference.tflite_detector import TfliteDetector
from efficientdet_tf.inference.tflite_outputs import (
    OFFICIAL_ORDER,
    TASK_LIBRARY_ORDER,
    output_order_from_shape,
)
from efficientdet_tf.object_detector import ObjectDetector

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures
# moving_average_decay=0: the weights after fit are the trained ones, not a lagging average of
# 80 steps (confident, distinct scores that survive int8). The five-block backbone: B0's 16
# blocks are not the point, and they make tracing the step and each export slower (80 steps: at
# 40 this backbone's int8 file has no box inside image 0 among MediaPipe's 10 best).
TINY = get_config("efficientdet-d0", f"{small_models.TINY},{small_models.NO_AUGMENTATION},"
                  "label_map=synthetic,learning_rate=0.64,moving_average_decay=0",
                  ).override(small_models.FIVE_BLOCK_BACKBONE)
TRAIN_DATA = "synthetic:train:8"
MAX_RESULTS = 10


def _metadata_writer_missing() -> str | None:
    try:
        tflite_metadata._metadata_writers()
    except tflite_metadata.MetadataWriterMissingError as error:
        return str(error)
    return None


@pytest.fixture(scope="module")
def trained():
    """A tiny D0 fitted to 8 synthetic images (80 steps): confident, distinct scores."""
    keras.backend.clear_session()
    tf.keras.utils.set_random_seed(1)
    detector = ObjectDetector(TINY)
    detector.compile(steps_per_execution=10)
    detector.fit(TRAIN_DATA, epochs=8, batch_size=8, steps_per_epoch=10, seed=0, verbose=0)
    return detector.network, detector.config


@pytest.fixture(scope="module")
def pixels_float32(trained, tmp_path_factory):
    """The float32 file of raw pixels in, read by both runner tests: with the metadata that
    MediaPipe needs where its writer is installed."""
    model, config = trained
    return export_tflite(model, config, tmp_path_factory.mktemp("tflite") / "float32.tflite",
                         metadata=_metadata_writer_missing() is None)


def test_missing_metadata_writer_names_the_install_command(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorflow_lite_support.metadata", None)
    with pytest.raises(tflite_metadata.MetadataWriterMissingError,
                       match=r"pip install --no-deps tflite-support==0\.4\.4.*libusb-1\.0-0"):
        tflite_metadata._metadata_writers()


def test_the_first_outputs_shape_tells_the_output_order():
    assert OFFICIAL_ORDER == ("count", "scores", "classes", "boxes")
    assert output_order_from_shape([1]) == OFFICIAL_ORDER
    assert output_order_from_shape([1, 25, 4]) == TASK_LIBRARY_ORDER
    with pytest.raises(ValueError, match=r"shape \[1, 8, 8, 27\].*count \[1\].*\[1, N, 4\]"):
        output_order_from_shape([1, 8, 8, 27])  # a network-only file: the first level's logits


@pytest.mark.slow
def test_runner_reads_both_input_layouts_alike(trained, pixels_float32, tmp_path):
    """Raw pixels in (normalized in the graph) or the official normalized image in, with the
    outputs in the Task Library's or the official order: the runner tells the files apart by
    their input tensor and first output, and gives the same detections."""
    model, config = trained
    image = SyntheticShapes.split("train", config.image_size, 8).render(0)
    files = {"pixels": pixels_float32, "normalized": export_tflite(
        model, config, tmp_path / "normalized.tflite", input_layout="normalized", metadata=False)}
    found = {}
    for layout, path in files.items():
        runner = TfliteDetector(path, config)
        assert runner.takes_pixels == (layout == "pixels")
        assert runner.detection_output_order == (
            TASK_LIBRARY_ORDER if layout == "pixels" else OFFICIAL_ORDER)
        found[layout] = detections_from_dict(runner([image]))
    np.testing.assert_allclose(found["pixels"].scores, found["normalized"].scores, atol=1e-3)
    np.testing.assert_array_equal(found["pixels"].classes, found["normalized"].classes)
    np.testing.assert_allclose(found["pixels"].boxes, found["normalized"].boxes, atol=0.1)


@pytest.mark.slow
def test_mediapipe_object_detector_gives_our_runners_detections(trained, pixels_float32, tmp_path):
    if missing := _metadata_writer_missing():
        pytest.skip(f"TFLite metadata writer unavailable: {missing}")
    vision = pytest.importorskip(
        "mediapipe.tasks.python.vision",
        reason="mediapipe is not installed (PyPI has no wheel for this platform?): "
               "pip install '.[tflite]'")
    import mediapipe  # noqa: PLC0415

    model, config = trained
    images = [SyntheticShapes.split("train", config.image_size, 8).render(i) for i in range(4)]
    files = {"float32": pixels_float32, "int8": export_tflite(
        model, config, tmp_path / "int8.tflite", "int8", dataset=TRAIN_DATA,
        num_calibration_images=8)}
    for quantization, path in files.items():
        ours = TfliteDetector(path, config)
        options = vision.ObjectDetectorOptions(
            base_options=mediapipe.tasks.BaseOptions(model_asset_path=str(path)),
            max_results=MAX_RESULTS)
        with vision.ObjectDetector.create_from_options(options) as theirs:
            for index, image in enumerate(images):
                found = theirs.detect(mediapipe.Image(
                    image_format=mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
                expected = _ours(ours, image, config)
                # MediaPipe (1.2) may leave out one detection of several of equal score, or more
                # where our scores tie exactly (int8 scores often do).
                top_scores = [score for _, score, _ in expected[:MAX_RESULTS]]
                tied = sum(top_scores.count(score) > 1 for score in top_scores)
                assert MAX_RESULTS - max(1, tied) <= len(found.detections) <= MAX_RESULTS
                inside = [d for d in found.detections if _inside(_yxyx(d.bounding_box), image)]
                assert inside, f"{quantization} image {index}: no box to compare"
                for detection in inside:
                    category = detection.categories[0]
                    box = _yxyx(detection.bounding_box)
                    assert any(
                        name == category.category_name and abs(score - category.score) <= 0.01
                        and _iou(box, our_box) >= 0.9 for our_box, score, name in expected
                    ), (f"{quantization} image {index}: MediaPipe's {category} at {box} is none "
                        f"of ours: {[d for d in expected if _iou(box, d[0]) > 0.5]}")


def _ours(runner, image, config):
    """(box yxyx in pixels, score, class name) of each of our runner's detections."""
    names = tflite_metadata.output_class_names(config)
    found = detections_from_dict(runner([image]))
    keep = np.arange(found.scores.shape[1]) < found.num_detections[0]
    return [(_whole_pixels(box), score, names[int(class_id) - 1]) for box, score, class_id in
            zip(found.boxes[0][keep], found.scores[0][keep], found.classes[0][keep])]


def _whole_pixels(box) -> np.ndarray:
    """A yxyx box rounded as MediaPipe rounds its boxes: origin and size truncated."""
    ymin, xmin = int(box[0]), int(box[1])
    return np.array([ymin, xmin, ymin + int(box[2] - box[0]), xmin + int(box[3] - box[1])],
                    np.float32)


def _inside(box, image) -> bool:
    return box[0] > 0 and box[1] > 0 and box[2] < image.shape[0] and box[3] < image.shape[1]


def _yxyx(box) -> np.ndarray:
    return np.array([box.origin_y, box.origin_x, box.origin_y + box.height,
                     box.origin_x + box.width], np.float32)


def _iou(a, b) -> float:
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = height * width
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return intersection / (area(a) + area(b) - intersection)
