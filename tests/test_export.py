"""Export: the SavedModel (served without this package) and TFLite files run through LiteRT."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from detection_candidates import count_on_candidates, decoded_candidates
from detection_matching import match_detections
from official_fixture import FIXTURE_MODEL, fixture_network, input_image, requires_fixture
from small_models import FIVE_BLOCK_BACKBONE, TINY

from efficientdet_tf.config import get_config
from efficientdet_tf.data.preprocess import preprocess_image
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.export.saved_model import export_saved_model
from efficientdet_tf.export.tflite import export_tflite
from efficientdet_tf.inference.detector import OUTPUT_NAMES, Detector, detections_from_dict
from efficientdet_tf.inference.loading import SavedModelDetector, open_detector
from efficientdet_tf.inference.segmentation_masks import SEGMENTATION_MASKS
from efficientdet_tf.inference.tflite_detector import TfliteDetector
from efficientdet_tf.model.builder import build_model

SERVE_WITHOUT_PACKAGE = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    outputs = {}
    for name, shape in (("batch", (2, 100, 150, 3)), ("tall", (1, 300, 77, 3))):
        images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        for key, value in serve(images=tf.constant(images)).items():
            outputs[f"{name}/{key}"] = value.numpy()
    np.savez(sys.argv[2], **outputs)
    print("imported efficientdet_tf:", any(m.startswith("efficientdet_tf") for m in sys.modules))
""")


@pytest.fixture(scope="module")
def small_detector(shared_network):
    """The shared exported set's model (`exported_files.py`): 128 px, both heads."""
    model, config = shared_network
    return Detector(config, model)


@pytest.mark.slow  # a fresh interpreter, without this package, serves the export
def test_saved_model_serves_any_image_size_without_this_package(
    small_detector, exported_files, tmp_path
):
    export_dir = exported_files["saved_model"]
    # -I: isolated interpreter, no PYTHONPATH and no current directory on sys.path.
    run = subprocess.run(
        [sys.executable, "-I", "-c", SERVE_WITHOUT_PACKAGE, str(export_dir), str(tmp_path / "o")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "imported efficientdet_tf: False" in run.stdout
    served = np.load(tmp_path / "o.npz")

    detect = small_detector.inference_function()
    reloaded = open_detector(export_dir, small_detector.config)  # picks the SavedModel runner
    for name, shape in (("batch", (2, 100, 150, 3)), ("tall", (1, 300, 77, 3))):
        images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        expected = detect(tf.constant(images))
        outputs = reloaded(images)
        assert sorted(outputs) == sorted([*OUTPUT_NAMES, SEGMENTATION_MASKS])
        for key in [*OUTPUT_NAMES, SEGMENTATION_MASKS]:
            np.testing.assert_allclose(served[f"{name}/{key}"], expected[key], atol=1e-5)
            np.testing.assert_allclose(outputs[key], expected[key], atol=1e-5)
        assert served[f"{name}/num_detections"].shape == (shape[0],)
        # Boxes are in input pixels: within the (clipped) image.
        boxes = served[f"{name}/detection_boxes"]
        assert boxes.max() <= max(shape[1:3]) + 1e-3 and boxes.min() >= 0


@pytest.mark.slow
def test_tflite_float16_and_int8_run_with_litert(small_detector, exported_files, tmp_path):
    """float32 and float16: the shared set's files; int8: a tiny detection-only model's (the
    converter leaves the two-headed model's network in float), calibrated on two images."""
    config = small_detector.config
    detection_only = get_config("efficientdet-d0", TINY).override(FIVE_BLOCK_BACKBONE)
    SyntheticShapes(2, detection_only.image_size, seed=3).write(tmp_path / "calibration")
    image = SyntheticShapes(1, (90, 120), seed=4).render(0)
    files = {quantization: exported_files[f"tflite_{quantization}"]
             for quantization in ("float32", "float16")}
    files["int8"] = export_tflite(
        build_model(detection_only), detection_only, tmp_path / "int8.tflite", "int8",
        dataset=str(tmp_path / "calibration-*.tfrecord"), num_calibration_images=2,
        metadata=False)
    runners = {name: TfliteDetector(path, detection_only if name == "int8" else config)
               for name, path in files.items()}
    for runner in runners.values():  # raw pixels in, whatever the precision
        assert runner.interpreter.get_input_details()[0]["dtype"] == np.uint8
        assert runner.takes_pixels
    int8_tensors = [t for t in runners["int8"].interpreter.get_tensor_details()
                    if t["dtype"] == np.int8]
    assert len(int8_tensors) > 100  # the network itself runs in int8
    assert files["float16"].stat().st_size < 0.6 * files["float32"].stat().st_size

    detections = {name: detections_from_dict(runner([image])) for name, runner in runners.items()}
    for name, found in detections.items():
        assert found.boxes.shape == (1, config.tflite_max_detections, 4), name
        assert 0 < found.num_detections[0] <= config.tflite_max_detections, name
    network_input = preprocess_image(image, config)[0].numpy()[np.newaxis]
    float32_scores = runners["float32"].run(network_input)[2]
    np.testing.assert_allclose(runners["float16"].run(network_input)[2], float32_scores,
                               atol=2e-3)


@pytest.mark.slow  # the official D0 at 512 px, exported twice
@requires_fixture
def test_saved_model_and_tflite_reproduce_keras_on_input_png(tmp_path):
    """SavedModel: the `global` Keras detections; TFLite float32: the Keras detections of its own
    NMS (global, hard). Scores within 1e-4 with the same class for >= 95 of 100; boxes those of
    candidate anchors (see `detection_candidates`)."""
    config = get_config(FIXTURE_MODEL)
    model = fixture_network()  # built once per process, shared with the other fixture tests
    image = input_image()
    network_input, image_scale = preprocess_image(image, config)
    raw = model(network_input[tf.newaxis], training=False)

    saved_model = SavedModelDetector(
        export_saved_model(Detector(config, model, "global"), tmp_path / "saved_model"))
    tflite = TfliteDetector(
        export_tflite(model, config, tmp_path / "model.tflite", metadata=False), config)
    hard = get_config(FIXTURE_MODEL, {"nms_configs.method": "hard"})
    for name, detector, reference_config in (
        ("saved_model", saved_model, config), ("tflite", tflite, hard),
    ):
        # Eager: tracing D0 at 512 px twice more would cost more than running it once.
        keras_detector = Detector(reference_config, model, "global")
        expected = [np.asarray(v)[0] for v in
                    detections_from_dict(keras_detector(image[np.newaxis]))[:3]]
        actual = [np.asarray(v)[0] for v in detections_from_dict(detector(image[np.newaxis]))[:3]]
        match = match_detections(expected, actual, score_tolerance=1e-4, min_iou=0.0)
        assert match.num_matched >= 95, f"{name}: {match.num_matched}/100 class and score"
        candidates = decoded_candidates(reference_config, "global", *raw, image_scale)
        assert count_on_candidates(actual, candidates) >= 95, name
