"""COCO evaluation of exported files: a SavedModel and TFLite files score what their checkpoint does.

The network has random weights, made to give distinct scores (with the initial batch-norm
statistics every score is about 0.01, and ties make any comparison fragile); the ground truth is
its own best detections (AP 1 for the network itself). An exported file that moved, rescaled or
relabelled boxes, or lost some, scores lower.
"""

import json

import keras
import pytest
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.data.preprocess import preprocess_images
from efficientdet_tf.data.synthetic import SyntheticShapes
from efficientdet_tf.evaluation.coco_evaluator import METRIC_NAMES
from efficientdet_tf.evaluation.model_evaluation import evaluate
from efficientdet_tf.export.saved_model import export_saved_model
from efficientdet_tf.export.tflite import export_tflite
from efficientdet_tf.inference.detector import SIGNATURE_KEY, Detector
from efficientdet_tf.inference.loading import open_exported
from efficientdet_tf.model.builder import build_model
import small_models

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures
# Hard NMS: what TFLite's detection op does, so that the float32 file can match the network.
TINY = f"{small_models.TINY},nms_configs.method=hard"
NUM_IMAGES = 6
GROUNDTRUTH_PER_IMAGE = 3


@pytest.fixture(scope="module")
def network():
    config = get_config("efficientdet-d0", TINY)
    keras.utils.set_random_seed(1)
    model = build_model(config)
    spread_scores(model, config)
    return model, config


def spread_scores(model, config):
    """Batch-norm statistics of a batch of synthetic images (features of unit scale), then the
    class predictions scaled down (scores between about 0.005 and 0.97) and the box predictions
    zeroed (boxes are the anchors, clipped: never empty, which would score as misses)."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    source = SyntheticShapes(4, config.image_size, seed=9)
    model(preprocess_images([source.render(i) for i in range(4)], config)[0], training=True)
    for weight in model.weights:
        for prefix, factor in (("class_net/class-predict/", 0.3), ("box_net/box-predict/", 0.0)):
            if weight.path.startswith(prefix + "pointwise_kernel"):
                weight.assign(weight * factor)


@pytest.fixture(scope="module")
def dataset(network, tmp_path_factory):
    """TFRecords of images of another size than the network input (image scales are not 1), and
    the network's own best detections as their ground truth."""
    model, config = network
    directory = tmp_path_factory.mktemp("exported_evaluation")
    SyntheticShapes(NUM_IMAGES, (48, 80), seed=2).write(directory / "val")
    records = str(directory / "val-*")
    evaluate(model, config, records, results_file=directory / "network.json")
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
def exported(network, tmp_path_factory):
    model, config = network
    directory = tmp_path_factory.mktemp("exported")
    return {
        "saved_model": export_saved_model(Detector(config, model), directory / "saved_model"),
        # The official layout (normalized image in) sees exactly the network's input; a
        # raw-pixel file sees it rounded to uint8, which moves this tiny model's near-tied scores.
        "float32": export_tflite(model, config, directory / "float32.tflite",
                                 input_layout="normalized", metadata=False),
    }


@pytest.fixture(scope="module")
def network_metrics(network, dataset):
    model, config = network
    records, groundtruth = dataset
    metrics = evaluate(model, config, records, batch_size=4, val_json_file=groundtruth)
    assert metrics["AP"] == pytest.approx(1.0)  # its own best detections
    return metrics


@pytest.mark.parametrize("kind, tolerance", [("saved_model", 1e-6), ("float32", 0.02)])
def test_exported_files_score_what_the_network_scores(
    network, dataset, exported, network_metrics, kind, tolerance
):
    _, config = network
    records, groundtruth = dataset
    metrics = evaluate(open_exported(exported[kind], config), config, records, batch_size=4,
                       val_json_file=groundtruth)
    assert set(metrics) == set(network_metrics)
    assert set(METRIC_NAMES) < set(metrics)  # and the per-class APs
    for name, value in network_metrics.items():
        assert metrics[name] == pytest.approx(value, abs=tolerance), name


def test_a_saved_model_of_another_image_size_is_named(dataset, exported):
    config = get_config("efficientdet-d0", TINY + ",image_size=128")
    records, _ = dataset
    with pytest.raises(ValueError, match="takes 64x64 network inputs but they are 128x128"):
        evaluate(open_exported(exported["saved_model"], config), config, records)


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
def test_a_path_that_is_no_exported_file_is_named(network, tmp_path, name):
    path = tmp_path / name
    if name == "checkpoint_dir":
        path.mkdir()
        (path / "checkpoint").write_text("")
    with pytest.raises(FileNotFoundError, match="neither a .tflite file nor a SavedModel"):
        open_exported(path, network[1])


@pytest.mark.slow
def test_float16_and_int8_tflite_files_are_evaluated(network, dataset, network_metrics, tmp_path):
    """float16 scores about the network's AP and AP50 (weights rounded to float16 reorder close
    scores, which moves the small per-area and per-class subsets more); int8 (random weights,
    calibrated on the evaluation images) gives every metric, whatever their values."""
    model, config = network
    records, groundtruth = dataset
    for quantization in ("float16", "int8"):
        path = export_tflite(model, config, tmp_path / f"{quantization}.tflite", quantization,
                             dataset=records, num_calibration_images=NUM_IMAGES)
        metrics = evaluate(open_exported(path, config), config, records, val_json_file=groundtruth)
        assert set(metrics) >= set(METRIC_NAMES), quantization
        if quantization == "float16":
            for name in ("AP", "AP50"):
                assert metrics[name] == pytest.approx(network_metrics[name], abs=0.1), name
