"""COCO evaluation of exported files: a SavedModel and TFLite files score what their checkpoint
does.

The network has random weights, made to give distinct scores (with the initial batch-norm
statistics every score is about 0.01, and ties make any comparison fragile); the ground truth is
its own best detections (AP 1 for the network itself). An exported file that moved, rescaled or
relabelled boxes, or lost some, scores lower. TFLite files of the official layout also give the
official `eval_tflite` reader (re-expressed here) our runner's detections.
"""

import json
from typing import NamedTuple

import keras
import numpy as np
import pytest
import small_models
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from efficientdet_tf.config import get_config
from efficientdet_tf.data.preprocess import preprocess_image
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.evaluation.coco_evaluator import METRIC_NAMES
from efficientdet_tf.evaluation.model_evaluation import evaluate
from efficientdet_tf.export.saved_model import export_saved_model
from efficientdet_tf.export.tflite import export_tflite
from efficientdet_tf.inference.detector import SIGNATURE_KEY, Detector, detections_from_dict
from efficientdet_tf.inference.loading import open_exported
from efficientdet_tf.inference.tflite_detector import TfliteDetector
from efficientdet_tf.model.builder import build_model

# Two groups of tests, each on one worker, that build the network, the dataset and their own files
# once: the float files (SavedModel, float32 TFLite) and the quantized ones (int8, float16).
FLOAT_FILES = pytest.mark.xdist_group(f"{__name__}.float")
QUANTIZED_FILES = pytest.mark.xdist_group(f"{__name__}.quantized")
# Hard NMS: what TFLite's detection op does, so that the float32 file can match the network.
TINY = f"{small_models.TINY},nms_configs.method=hard"
NUM_IMAGES = 6
CALIBRATION_IMAGES = 2  # of the evaluation images: ranges for int8, whatever they are
FILE_FIXTURES = {"saved_model": "saved_model", "float32": "float32_official_layout",
                 "int8": "int8_official_layout"}
GROUNDTRUTH_PER_IMAGE = 3


@pytest.fixture(scope="module")
def network():
    """The tiny D0 with the five-block backbone (B0's 16 blocks are not the point here and make
    every export slower), random weights given spread scores."""
    config = get_config("efficientdet-d0", TINY).override(small_models.FIVE_BLOCK_BACKBONE)
    keras.utils.set_random_seed(1)
    model = build_model(config)
    small_models.spread_scores(model, config)
    return model, config


@pytest.fixture(scope="module")
def keras_detector(network):
    """The network's compiled detector: both of its evaluations (batches of 4) trace it once."""
    model, config = network
    return Detector(config, model).compiled()


@pytest.fixture(scope="module")
def dataset(network, keras_detector, tmp_path_factory):
    """TFRecords of images of another size than the network input (image scales are not 1), and
    the network's own best detections as their ground truth."""
    _, config = network
    directory = tmp_path_factory.mktemp("exported_evaluation")
    SyntheticShapes(NUM_IMAGES, (48, 80), seed=2).write(directory / "val")
    records = str(directory / "val-*")
    evaluate(keras_detector, config, records, batch_size=4,
             results_file=directory / "network.json")
    detections = json.loads((directory / "network.json").read_text())
    groundtruth = own_best_detections(detections, GROUNDTRUTH_PER_IMAGE * NUM_IMAGES)
    (directory / "groundtruth.json").write_text(json.dumps(groundtruth))
    return records, directory / "groundtruth.json"


def own_best_detections(detections: list[dict], count: int) -> dict:
    """The `count` best-scoring detections as a COCO ground truth."""
    best = sorted(detections, key=lambda d: -d["score"])[:count]
    return {
        "images": [{"id": i} for i in sorted({d["image_id"] for d in detections})],
        "categories": [{"id": i} for i in (1, 2, 3)],
        "annotations": [
            {"id": i + 1, "image_id": d["image_id"], "category_id": d["category_id"],
             "bbox": d["bbox"], "area": d["bbox"][2] * d["bbox"][3], "iscrowd": 0}
            for i, d in enumerate(best)
        ],
    }


@pytest.fixture(scope="module")
def saved_model(network, tmp_path_factory):
    model, config = network
    return export_saved_model(Detector(config, model),
                              tmp_path_factory.mktemp("exported") / "saved_model")


@pytest.fixture(scope="module")
def float32_official_layout(network, tmp_path_factory):
    """The official layout (normalized image in) sees exactly the network's input; a raw-pixel
    file sees it rounded to uint8, which moves this tiny model's near-tied scores."""
    model, config = network
    return export_tflite(model, config, tmp_path_factory.mktemp("float32") / "float32.tflite",
                         input_layout="normalized", metadata=False)


@pytest.fixture(scope="module")
def int8_official_layout(network, dataset, tmp_path_factory):
    """An int8 file of the official layout, calibrated on the first evaluation images."""
    model, config = network
    records, _ = dataset
    path = tmp_path_factory.mktemp("int8") / "int8.tflite"
    return export_tflite(model, config, path, "int8", dataset=records,
                         num_calibration_images=CALIBRATION_IMAGES, input_layout="normalized",
                         metadata=False)


@pytest.fixture(scope="module")
def network_metrics(network, keras_detector, dataset):
    _, config = network
    records, groundtruth = dataset
    metrics = evaluate(keras_detector, config, records, batch_size=4, val_json_file=groundtruth)
    assert metrics["AP"] == pytest.approx(1.0)  # its own best detections
    return metrics


@FLOAT_FILES
@pytest.mark.parametrize("kind, tolerance", [("saved_model", 1e-6), ("float32", 0.02)])
def test_exported_files_score_what_the_network_scores(
    network, dataset, network_metrics, kind, tolerance, request
):
    _, config = network
    records, groundtruth = dataset
    path = request.getfixturevalue(FILE_FIXTURES[kind])
    metrics = evaluate(open_exported(path, config), config, records, batch_size=4,
                       val_json_file=groundtruth)
    assert set(metrics) == set(network_metrics)
    assert set(METRIC_NAMES) < set(metrics)  # and the per-class APs
    for name, value in network_metrics.items():
        assert metrics[name] == pytest.approx(value, abs=tolerance), name


@FLOAT_FILES
def test_a_saved_model_of_another_image_size_is_named(dataset, saved_model):
    config = get_config("efficientdet-d0", TINY + ",image_size=128")
    records, _ = dataset
    with pytest.raises(ValueError, match="takes 64x64 network inputs but they are 128x128"):
        evaluate(open_exported(saved_model, config), config, records)


@FLOAT_FILES
def test_a_saved_model_without_the_preprocessed_signature_is_named(network, dataset, tmp_path):
    """SavedModels exported before evaluation needed it have only `serving_default`."""
    _, config = network
    records, _ = dataset
    module = tf.Module()
    module.serve = tf.function(lambda images: {"num_detections": tf.shape(images)[:1]},
                               input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    tf.saved_model.save(module, str(tmp_path), signatures={SIGNATURE_KEY: module.serve})
    with pytest.raises(ValueError, match="no 'detect_preprocessed' signature.*export it again"):
        evaluate(open_exported(tmp_path, config), config, records)


@pytest.mark.parametrize("name", ["missing", "checkpoint_dir"])
def test_a_path_that_is_no_exported_file_is_named(tmp_path, name):
    path = tmp_path / name
    if name == "checkpoint_dir":
        path.mkdir()
        (path / "checkpoint").write_text("")
    with pytest.raises(FileNotFoundError, match="is neither an exported file"):
        open_exported(path, get_config("efficientdet-d0", TINY))


@pytest.mark.slow
@QUANTIZED_FILES
def test_float16_and_int8_tflite_files_are_evaluated(
    network, dataset, network_metrics, int8_official_layout, tmp_path
):
    """float16 (raw pixels in) scores about the network's AP and AP50 (weights rounded to float16
    reorder close scores, which moves the small per-area and per-class subsets more); int8 (the
    official layout; random weights, calibrated on two evaluation images) gives every metric,
    whatever their values."""
    model, config = network
    records, groundtruth = dataset
    files = {"float16": export_tflite(model, config, tmp_path / "float16.tflite", "float16"),
             "int8": int8_official_layout}
    for quantization, path in files.items():
        metrics = evaluate(open_exported(path, config), config, records, val_json_file=groundtruth)
        assert set(metrics) >= set(METRIC_NAMES), quantization
        if quantization == "float16":
            for name in ("AP", "AP50"):
                assert metrics[name] == pytest.approx(network_metrics[name], abs=0.1), name


@pytest.mark.parametrize("quantization", [pytest.param("float32", marks=FLOAT_FILES),
                                          pytest.param("int8", marks=QUANTIZED_FILES)])
def test_the_official_tflite_reader_gets_our_runners_detections(
    network, quantization, request
):
    """A file of the official layout has the official exporter's signature, and the official
    `eval_tflite` reader (re-expressed in `read_like_official_eval_tflite`) gets from it the
    detections of our runner. The image is snapped to the int8 input grid, a quarter step above
    each level, so that the official truncation and our rounding quantize it alike. Our runner
    clips boxes to the image (as the `global` mode does) and the official reader does not: boxes
    are compared clipped."""
    _, config = network
    path = request.getfixturevalue(FILE_FIXTURES[quantization])
    size = config.tflite_max_detections
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    signature = interpreter.get_signature_runner()
    assert interpreter.get_signature_list() == {"serving_default": {
        "inputs": ["images"], "outputs": ["output_0", "output_1", "output_2", "output_3"]}}
    outputs = signature.get_output_details()
    assert [outputs[f"output_{i}"]["shape"].tolist() for i in range(4)] == [
        [1], [1, size], [1, size], [1, size, 4]]
    assert {output["dtype"] for output in outputs.values()} == {np.float32}
    expected_input = np.float32 if quantization == "float32" else np.uint8
    assert signature.get_input_details()["images"]["dtype"] == expected_input

    image = SyntheticShapes(NUM_IMAGES, (48, 80), seed=2).render(0)
    network_input, image_scale = (np.asarray(part) for part in preprocess_image(image, config))
    network_input = on_input_grid(interpreter, network_input[np.newaxis])
    theirs = read_like_official_eval_tflite(path, network_input, image_scale, config)
    ours = detections_from_dict(
        TfliteDetector(path, config).detect_preprocessed(network_input, [image_scale]))
    count = int(ours.num_detections[0])
    assert count > 10 and theirs.count.tolist() == [count]
    rows = slice(0, count)
    np.testing.assert_array_equal(theirs.scores[0, rows], ours.scores[0, rows])
    np.testing.assert_array_equal(theirs.classes[0, rows], ours.classes[0, rows])
    height, width = np.array(config.image_size, np.float32) * image_scale
    clipped = np.clip(theirs.boxes[0, rows], 0.0, [height, width, height, width])
    np.testing.assert_allclose(clipped, ours.boxes[0, rows], rtol=1e-5, atol=1e-4)


def on_input_grid(interpreter, network_input: np.ndarray) -> np.ndarray:
    """The image moved to a quarter step above the nearest level of a quantized input."""
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    if not scale:
        return network_input
    limits = np.iinfo(detail["dtype"])
    levels = np.clip(np.round(network_input / scale + zero_point), limits.min, limits.max)
    return ((levels - zero_point + 0.25) * scale).astype(np.float32)


class OfficialDetections(NamedTuple):
    count: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray


def read_like_official_eval_tflite(path, network_input, image_scale, config):
    """What the official tf2/eval_tflite.py makes of a TFLite file with its NMS: `LiteRunner`
    quantizes the normalized image with the input's scale and zero point (truncating), calls the
    only signature with `images=`, dequantizes quantized outputs, and reads output_0..3 as
    (num_detections, scores, classes, boxes); its main loop adds 1 to the classes and scales the
    boxes by the network input size and the image scale."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    if input_detail["quantization"] != (0, 0):
        scale, zero_point = input_detail["quantization"]
        network_input = np.array(network_input / scale + zero_point, dtype=input_detail["dtype"])
    outputs = interpreter.get_signature_runner()(images=network_input)
    output_details = interpreter.get_output_details()

    def output(index):
        value = outputs[f"output_{index}"]
        if output_details[index]["quantization"] != (0, 0):
            scale, zero_point = output_details[index]["quantization"]
            value = (value.astype(np.float32) - zero_point) * scale
        return value

    count, scores, classes, boxes = (output(index) for index in range(4))
    height, width = config.image_size
    boxes = boxes * np.array([height, width, height, width], np.float32) * image_scale
    return OfficialDetections(count, scores, classes + 1, boxes)
