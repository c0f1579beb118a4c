"""The same weights give the same detections and metrics on every Keras backend.

Each test compares with what `backend_reference.py` wrote under the other backend (JAX when
these tests run on TensorFlow, TensorFlow when they run on JAX): weights and a `.keras` file
saved there load here and detect the same; evaluation scores the same.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from backend_reference import (
    EVAL_DATA,
    EVAL_SAMPLES,
    HPARAMS,
    raw_outputs,
    reference_images,
)
from backends import BACKEND
from cli_in_process import run_cli
from detection_matching import match_detections
from jax_environment import COMPILATION_CACHE

import efficientdet_tf as edet
from efficientdet_tf.backends import BackendError

pytestmark = [pytest.mark.any_backend, pytest.mark.xdist_group("backend_reference")]

OTHER_BACKEND = "jax" if BACKEND == "tensorflow" else "tensorflow"
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("reference")
    env = {**COMPILATION_CACHE, **os.environ, "KERAS_BACKEND": OTHER_BACKEND}
    result = subprocess.run(
        [sys.executable, str(TESTS / "backend_reference.py"), str(out_dir)],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out_dir


def assert_same_detections(actual: dict, expected) -> None:
    np.testing.assert_array_equal(actual["num_detections"], expected["num_detections"])
    for image, count in enumerate(expected["num_detections"]):
        match = match_detections(
            [expected[name][image, :count] for name in
             ("detection_boxes", "detection_scores", "detection_classes")],
            [np.asarray(actual[name])[image, :count] for name in
             ("detection_boxes", "detection_scores", "detection_classes")],
            score_tolerance=1e-4, min_iou=0.99)
        assert match.num_matched == count, f"image {image}: {match.num_matched}/{count} matched"


@pytest.fixture(scope="module")
def loaded_detector(reference: Path) -> edet.ObjectDetector:
    """The detector with the weights saved under the other backend (the tests only read it)."""
    detector = edet.ObjectDetector("efficientdet-d0", HPARAMS)
    edet.load_weights(detector.network, reference / "weights")
    return detector


def test_weights_saved_under_another_backend_give_its_outputs(reference, loaded_detector):
    expected = np.load(reference / "outputs.npz")
    for name, output in raw_outputs(loaded_detector.network).items():
        np.testing.assert_allclose(output, expected[name], atol=1e-4, err_msg=name)


def test_weights_saved_under_another_backend_detect_the_same(reference, loaded_detector):
    detector = loaded_detector
    assert_same_detections(detector.predict(reference_images()),
                           np.load(reference / "detections.npz"))


@pytest.mark.skipif(OTHER_BACKEND != "tensorflow", reason="the trainer writes on TensorFlow")
def test_a_training_checkpoint_written_on_tensorflow_detects_the_same(reference):
    detector = edet.ObjectDetector("efficientdet-d0", HPARAMS)
    edet.load_weights(detector.network, reference / "training")
    assert_same_detections(detector.predict(reference_images()),
                           np.load(reference / "detections.npz"))


def test_a_keras_file_saved_under_another_backend_detects_the_same(reference):
    detector = keras.saving.load_model(reference / "model.keras")
    assert_same_detections(detector.predict(reference_images()),
                           np.load(reference / "detections.npz"))


def test_evaluation_scores_the_same(reference, loaded_detector):
    metrics = loaded_detector.evaluate(EVAL_DATA, batch_size=EVAL_SAMPLES,
                                       eval_samples=EVAL_SAMPLES)
    expected = json.loads((reference / "metrics.json").read_text())
    assert metrics.keys() == expected.keys()
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-4), name


def test_the_command_line_infers_with_those_weights(reference, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for index, image in enumerate(reference_images()):
        Image.fromarray(image).save(images / f"{index}.png")
    hparams = tmp_path / "hparams.yaml"
    hparams.write_text(yaml.safe_dump(HPARAMS))
    status = run_cli("--mode=infer", "--model_name=efficientdet-d0", f"--hparams={hparams}",
                     f"--ckpt={reference / 'weights'}", f"--input_image={images}/*.png",
                     f"--output_image_dir={tmp_path / 'out'}", "--min_score_thresh=0")
    assert status == 0
    drawn = json.loads((tmp_path / "out" / "detections_by_image.json").read_text())
    counts = {Path(name).name: len(detections) for name, detections in drawn.items()}
    expected = np.load(reference / "detections.npz")
    assert [counts[f"{index}.png"] for index in range(2)] == list(expected["num_detections"])


@pytest.mark.skipif(BACKEND == "tensorflow", reason="TensorFlow runs every feature")
def test_tensorflow_only_features_are_refused_in_one_line(capsys, tmp_path):
    detector = edet.ObjectDetector("efficientdet-d0", HPARAMS)
    with pytest.raises(BackendError, match="TFLite export runs on the TensorFlow backend only"):
        detector.export(tmp_path / "export", formats=("tflite_float32",))
    assert run_cli("--mode=export", f"--model_dir={tmp_path / 'run'}") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"--mode=export runs on the TensorFlow backend only, and KERAS_BACKEND is " \
           f"'{BACKEND}'" in error
