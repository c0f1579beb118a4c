"""The Python API: `ObjectDetector` fits with Keras callbacks, evaluates, predicts, saves, exports,
starts from official weights, and trains exactly as the command line does."""

import csv

import keras
import numpy as np
import pytest
import small_models
import tensorflow as tf
from cli_in_process import run_cli
from official_fixture import FIXTURE_DIR, requires_fixture

from efficientdet_tf import ConfigError, ObjectDetector, get_config
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.inference.detector import SIGNATURE_KEY
from efficientdet_tf.model.checkpoint import EMA_SUFFIX, checkpoint_name
from efficientdet_tf.training.callbacks import TrainingCheckpoints

# The tests of the `fitted` fixture share one worker, which fits once; the others go anywhere.
fitted_group = pytest.mark.xdist_group(__name__)
TINY = f"{small_models.TINY},{small_models.NO_AUGMENTATION},learning_rate=0.64"
# TINY with the five-block backbone, for the tests that trace training or inference: B0's 16
# blocks are not the point of any here.
FIVE_BLOCKS = get_config("efficientdet-d0", TINY).override(small_models.FIVE_BLOCK_BACKBONE)
COCO_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100",
                "ARs", "ARm", "ARl"]


def images_and_boxes(split: str, count: int) -> tf.data.Dataset:
    """The synthetic images as a user's own tf.data.Dataset: uint8 images, pixel boxes."""
    shapes = SyntheticShapes.split(split, (64, 64), count)
    images = np.stack([shapes.render(i) for i in range(count)])
    annotations = [shapes.annotations(i) for i in range(count)]
    return tf.data.Dataset.from_generator(
        lambda: ((image, {"boxes": a.boxes, "classes": a.classes})
                 for image, a in zip(images, annotations)),
        output_signature=(tf.TensorSpec([64, 64, 3], tf.uint8),
                          {"boxes": tf.TensorSpec([None, 4], tf.float32),
                           "classes": tf.TensorSpec([None], tf.int64)}))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny detector fitted with validation on a tf.data.Dataset, a CSV log, TensorBoard and
    early stopping that stops after epoch 2 (its min_delta of 1 AP is never reached)."""
    keras.backend.clear_session()
    tf.keras.utils.set_random_seed(1)
    detector = ObjectDetector(FIVE_BLOCKS)
    logs = tmp_path_factory.mktemp("logs")
    csv_path = logs / "log.csv"
    history = detector.fit(
        "synthetic:train:8", epochs=4, batch_size=8, steps_per_epoch=8, seed=0, verbose=0,
        validation_data=images_and_boxes("val", 8),
        callbacks=[keras.callbacks.CSVLogger(str(csv_path)),
                   keras.callbacks.TensorBoard(str(logs / "tensorboard")),
                   keras.callbacks.EarlyStopping(monitor="val_AP", mode="max", patience=0,
                                                 min_delta=1.0)])
    return detector, history, csv_path


@fitted_group
def test_fit_logs_validation_metrics_that_keras_callbacks_act_on(fitted):
    detector, history, csv_path = fitted
    assert history.epoch == [0, 1]  # early stopping after the second epoch
    assert int(detector.optimizer.iterations.numpy()) == 16
    for name in ("loss", "det_loss", "learning_rate", *(f"val_{m}" for m in COCO_METRICS)):
        assert len(history.history[name]) == 2, name
    assert all(0 <= ap <= 1 for ap in history.history["val_AP50"])
    # Warm-up then cosine over the 4 epochs given to fit (32 steps, not the config's 300
    # epochs): at step 16, the official 0.5 * 0.08 * (1 + cos(pi * 16 / (32 - 8))), 0.08 being
    # 0.64 * 8 / 64.
    assert history.history["learning_rate"][1] == pytest.approx(0.02, rel=1e-5)
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert float(rows[1]["val_AP"]) == pytest.approx(history.history["val_AP"][1])
    for part in ("train", "validation"):  # keras.callbacks.TensorBoard's two writers
        assert list((csv_path.parent / "tensorboard" / part).glob("events.out.tfevents.*")), part


@fitted_group
def test_evaluate_returns_the_coco_metrics_and_per_class_ap(fitted):
    detector, history, _ = fitted
    metrics = detector.evaluate(images_and_boxes("val", 8))
    assert set(COCO_METRICS) <= metrics.keys()
    # After fit the model holds the averaged weights, which validation scored.
    assert metrics["AP"] == pytest.approx(history.history["val_AP"][-1], abs=1e-6)
    assert {"AP_/circle", "AP_/square", "AP_/triangle"} <= metrics.keys()  # synthetic names


@fitted_group
def test_predict_takes_images_of_any_size_like_the_saved_model(fitted, tmp_path):
    detector, _, _ = fitted
    shapes = SyntheticShapes.split("val", (96, 64), 1)
    images = [shapes.render(0), SyntheticShapes.split("val", (64, 64), 1).render(0)]
    detections = detector.predict(images)
    assert detections["detection_boxes"].shape == (2, 100, 4)
    assert detections["num_detections"].shape == (2,)
    assert detections["detection_boxes"][0, :, 2].max() > 64  # in the first image's 96 rows

    exported = detector.export(tmp_path, formats=("saved_model", "tflite_float32"))
    assert (tmp_path / "saved_model.pb").is_file() and exported["saved_model"] == tmp_path
    assert exported["tflite_float32"] == tmp_path / "float32.tflite"
    assert exported["tflite_float32"].stat().st_size > 0
    serve = tf.saved_model.load(str(tmp_path)).signatures[SIGNATURE_KEY]
    for index, image in enumerate(images):
        served = serve(images=tf.constant(image[None]))
        for name, value in served.items():
            np.testing.assert_allclose(detections[name][index], value.numpy()[0], rtol=1e-4,
                                       atol=1e-3, err_msg=name)


@fitted_group
def test_a_keras_file_gives_back_the_same_detections_config_and_label_map(fitted, tmp_path):
    detector, _, _ = fitted
    images = [SyntheticShapes.split("val", (64, 64), 2).render(i) for i in range(2)]
    detector.save(tmp_path / "detector.keras")
    loaded = keras.saving.load_model(tmp_path / "detector.keras")
    assert isinstance(loaded, ObjectDetector)
    assert loaded.config == detector.config
    assert loaded.config.label_map == {1: "circle", 2: "square", 3: "triangle"}
    expected, got = detector.predict(images), loaded.predict(images)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, atol=1e-5, err_msg=name)


def test_export_needs_calibration_images_for_int8():
    detector = ObjectDetector("efficientdet-d0", TINY)
    with pytest.raises(ValueError, match="tflite_int8 calibrates on real images: give them "
                                         r"\(--file_pattern, or ObjectDetector.export's "
                                         "representative_data"):
        detector.export("unused", formats=("tflite_int8",))
    with pytest.raises(ValueError, match=r"Unknown export formats \['coreml'\]"):
        detector.export("unused", formats=("coreml",))


def test_a_dataset_of_another_structure_is_refused_with_the_expected_one():
    batched = images_and_boxes("train", 2).padded_batch(2)
    with pytest.raises(ValueError, match=r"unbatched \(image, .*call \.unbatch\(\) first"):
        ObjectDetector("efficientdet-d0", TINY).fit(batched, epochs=1, batch_size=2)


@requires_fixture
def test_from_pretrained_with_other_classes_reinitializes_only_the_class_prediction(caplog):
    keras.backend.clear_session()
    detector = ObjectDetector.from_pretrained(
        "efficientdet-d0", num_classes=5, hparams="image_size=64",
        checkpoint=FIXTURE_DIR / "ckpt")
    reader = tf.train.load_checkpoint(str(FIXTURE_DIR / "ckpt"))
    different = []
    for variable in detector.network.weights:
        name = checkpoint_name(variable)
        stored = reader.get_tensor(name + EMA_SUFFIX if reader.has_tensor(name + EMA_SUFFIX)
                                   else name)  # the averaged weights, as for evaluation
        if stored.shape != variable.shape:
            different.append(variable.path)
        else:
            np.testing.assert_array_equal(variable.numpy(), stored, err_msg=variable.path)
    assert different == ["class_net/class-predict/pointwise_kernel",
                         "class_net/class-predict/bias"]
    assert "class_net/class-predict/bias: checkpoint [810] vs model [45]" in caplog.text


def test_the_command_line_and_fit_train_the_same_weights(tmp_path):
    """Same seed, same data, 2 steps: the CLI's checkpoint equals the Python API's."""
    config = FIVE_BLOCKS
    config.save(tmp_path / "config.yaml")
    keras.backend.clear_session()
    assert run_cli("--mode=train", f"--model_dir={tmp_path / 'cli'}",
                   "--train_file_pattern=synthetic:train:8", "--batch_size=4",
                   f"--model_name={tmp_path / 'config.yaml'}", "--tf_random_seed=1",
                   "--num_epochs=1") == 0
    keras.backend.clear_session()
    tf.keras.utils.set_random_seed(1)
    detector = ObjectDetector(config)
    detector.compile(run_eagerly=True)  # the command line traces the step; 2 steps need not
    detector.fit("synthetic:train:8", epochs=1, batch_size=4, seed=1, verbose=0,
                 callbacks=[TrainingCheckpoints(tmp_path / "api")])
    from_cli = tf.train.load_checkpoint(str(tmp_path / "cli" / "ckpt-2"))
    from_api = tf.train.load_checkpoint(str(tmp_path / "api" / "ckpt-2"))
    names = [n for n in from_cli.get_variable_to_shape_map() if not n.startswith("_CHECKPOINT")]
    assert sorted(names) == sorted(n for n in from_api.get_variable_to_shape_map()
                                   if not n.startswith("_CHECKPOINT"))
    assert sum(n.startswith("model/by_path/") for n in names) == len(detector.network.weights)
    for name in names:
        np.testing.assert_allclose(from_api.get_tensor(name), from_cli.get_tensor(name),
                                   rtol=1e-6, atol=1e-7, err_msg=name)


def test_a_segmentation_model_validates_with_miou_and_predicts_masks_not_boxes():
    detector = ObjectDetector(FIVE_BLOCKS.override("heads=segmentation,max_level=6,"
                                                   "seg_num_classes=4"))
    detector.compile(run_eagerly=True)  # one step: not worth tracing
    history = detector.fit("synthetic:train:8", epochs=1, batch_size=8, verbose=0,
                           validation_data="synthetic:val:8")
    assert 0 < history.history["val_mIoU"][0] <= 1
    assert {"val_pixel_accuracy", "val_IoU/0", "val_IoU/3"} <= history.history.keys()
    assert "val_AP" not in history.history  # no detection head, no COCO metrics
    assert detector.evaluate("synthetic:val:8")["mIoU"] == history.history["val_mIoU"][0]
    masks_only = detector.predict([np.zeros((64, 48, 3), np.uint8)])
    assert set(masks_only) == {"segmentation_masks"}
    assert masks_only["segmentation_masks"][0].shape == (64, 48)
    both = ObjectDetector(FIVE_BLOCKS.override("heads=object_detection*segmentation,"
                                               "max_level=6,seg_num_classes=4"))
    outputs = both.predict([np.zeros((64, 64, 3), np.uint8)])
    assert outputs["detection_boxes"].shape == (1, 100, 4)
    assert outputs["segmentation_masks"][0].shape == (64, 64)


def test_a_batch_larger_than_the_data_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"batch_size=8 \(--batch_size\) exceeds the 4 images "
                                          "of an epoch"):
        ObjectDetector("efficientdet-d0", TINY).fit("synthetic:train:4", batch_size=8)
