"""Masks out of inference and export: at the images' size, alike from every runner."""

import json

import numpy as np
import pytest
import small_models
import tensorflow as tf
from cli_in_process import run_cli
from PIL import Image

from efficientdet_tf.config import get_config
from efficientdet_tf.config.files import write_yaml
from efficientdet_tf.data.formats.masks import read_mask
from efficientdet_tf.data.preprocess import fitted_size
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.evaluation.model_evaluation import evaluate
from efficientdet_tf.inference.detector import OUTPUT_NAMES, Detector
from efficientdet_tf.inference.loading import open_exported
from efficientdet_tf.inference.segmentation_masks import SEGMENTATION_MASKS, image_size_masks
from efficientdet_tf.model.checkpoint import save_weights
from efficientdet_tf.object_detector import ObjectDetector

pytestmark = pytest.mark.xdist_group(__name__)  # one worker builds the module fixtures
# Both heads, at 64x64 (a multiple of 2**max_level, as the segmentation head needs). Its own
# export: masks of random weights at 64 px agree to 0.999 between runners, those of the shared
# exported set's model (128 px, spread scores) to only about 0.96.
BOTH_HEADS = ("image_size=64,max_level=6,fpn_cell_repeats=1,box_class_repeats=1,num_classes=3,"
              "heads=object_detection*segmentation,seg_num_classes=4")
# With the five-block backbone: B0's 16 blocks are not the point, and they make each export and
# each trace of the network slower.
CONFIG = get_config("efficientdet-d0", BOTH_HEADS).override(small_models.FIVE_BLOCK_BACKBONE)
SIZES = ((2, 90, 120), (1, 50, 30))  # batches of images of other sizes than the network input


def images_of(batch, height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), np.uint8)


@pytest.fixture(scope="module")
def detector():
    """An ObjectDetector with both heads (random weights: masks of all classes)."""
    return ObjectDetector(CONFIG)


@pytest.fixture(scope="module")
def exported(detector, tmp_path_factory):
    directory = tmp_path_factory.mktemp("exported")
    return detector.export(directory, formats=("saved_model", "tflite_float32"))


def test_masks_cut_and_resized_back_are_the_image_masks():
    """A mask resized and padded as the images are, then mapped back, is the original mask."""
    config = get_config("efficientdet-d0", "image_size=64")
    height, width = 30, 50
    rows, columns = np.mgrid[:height, :width]
    mask = ((rows // 6 + columns // 10) % 4).astype(np.uint8)  # blocks of 6x10 pixels
    (scaled_height, scaled_width), _ = fitted_size(height, width, config)
    padded = np.full((1, 64, 64), 9, np.uint8)  # padding: class 9
    padded[0, :scaled_height, :scaled_width] = tf.image.resize(
        mask[..., np.newaxis], (scaled_height, scaled_width), method="nearest")[..., 0]
    back = image_size_masks(tf.constant(padded), height, width, config).numpy()[0]
    assert back.shape == (height, width) and 9 not in back
    assert (back == mask).mean() > 0.95  # nearest-neighbour both ways: block edges may move


def test_saved_model_serves_masks_at_input_size_beside_detections(detector, exported):
    serve = tf.saved_model.load(str(exported["saved_model"])).signatures["serving_default"]
    for batch, height, width in SIZES:
        images = images_of(batch, height, width)
        served = serve(images=tf.constant(images))
        assert sorted(served) == sorted([*OUTPUT_NAMES, SEGMENTATION_MASKS])
        masks = served[SEGMENTATION_MASKS].numpy()
        assert masks.shape == (batch, height, width) and masks.dtype == np.uint8
        assert len(np.unique(masks)) > 1
        keras_masks = Detector(detector.config, detector.network)(images)[SEGMENTATION_MASKS]
        assert (masks == keras_masks.numpy()).mean() > 0.999  # folded batch norms: rounding


def test_predict_gives_a_mask_of_each_image_size(detector, exported):
    images = [images_of(1, 90, 120)[0], images_of(1, 50, 30, seed=1)[0]]
    predicted = detector.predict(images, batch_size=1)
    masks = predicted[SEGMENTATION_MASKS]
    assert [mask.shape for mask in masks] == [(90, 120), (50, 30)]
    assert predicted["detection_boxes"].shape[0] == 2
    serve = open_exported(exported["saved_model"], detector.config)
    for image, mask in zip(images, masks):
        assert (serve(image[np.newaxis])[SEGMENTATION_MASKS].numpy()[0] == mask).mean() > 0.999


def test_tflite_float_file_gives_the_saved_models_masks_and_detections(detector, exported):
    tflite = open_exported(exported["tflite_float32"], detector.config)
    saved_model = open_exported(exported["saved_model"], detector.config)
    images = images_of(1, 90, 120)
    ours, theirs = tflite(images), saved_model(images)
    assert ours[SEGMENTATION_MASKS].shape == (1, 90, 120)
    assert (ours[SEGMENTATION_MASKS] == theirs[SEGMENTATION_MASKS].numpy()).mean() > 0.99
    assert ours["detection_boxes"].shape[-1] == 4 and ours["num_detections"][0] > 0
    with pytest.raises(ValueError, match="has 5 outputs but a model with "
                                         r"heads=\['segmentation'\] has 1: give the --hparams"):
        open_exported(exported["tflite_float32"], CONFIG.override({"heads": ["segmentation"]}))(
            images)


def test_exported_models_score_the_mIoU_of_the_keras_model(detector, exported):
    keras_metrics = evaluate(Detector(detector.config, detector.network).compiled(),
                             detector.config, "synthetic:val:4", batch_size=2)
    for kind in ("saved_model", "tflite_float32"):
        runner = open_exported(exported[kind], detector.config)
        metrics = evaluate(runner, detector.config, "synthetic:val:4", batch_size=2)
        assert metrics["mIoU"] == pytest.approx(keras_metrics["mIoU"], abs=0.01), kind
        assert "AP" in metrics  # (TFLite's NMS is another: its AP is not Keras')


@pytest.mark.slow
def test_infer_mode_writes_overlays_masks_and_detections(detector, tmp_path, capsys):
    checkpoint = save_weights(detector.network, tmp_path / "checkpoint" / "model")
    write_yaml(detector.config.as_dict(), tmp_path / "hparams.yaml")  # the backbone's blocks
    Image.fromarray(SyntheticShapes(1, (90, 120), seed=5).render(0)).save(tmp_path / "a.png")
    status = run_cli(
        "--mode=infer", "--model_name=efficientdet-d0", f"--hparams={tmp_path}/hparams.yaml",
        f"--ckpt={checkpoint}", f"--input_image={tmp_path}/a.png",
        f"--output_image_dir={tmp_path}/out", "--min_score_thresh=0")
    printed = capsys.readouterr()
    assert status == 0, printed.err[-3000:]
    assert "in the mask" in printed.out and "detections" in printed.out
    mask = read_mask(tmp_path / "out" / "masks" / "a.png")
    expected = detector.predict([np.asarray(Image.open(tmp_path / "a.png"))])
    assert (mask == expected[SEGMENTATION_MASKS][0]).mean() > 0.999
    with Image.open(tmp_path / "out" / "masks" / "a.png") as png:
        assert png.mode == "P"  # Pascal VOC's palette PNG
    drawn = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    original = np.asarray(Image.open(tmp_path / "a.png"))
    assert drawn.shape == original.shape
    coloured = mask != 0
    assert coloured.any()
    assert (drawn[coloured] != original[coloured]).any(axis=-1).mean() > 0.9
    [detections] = json.loads((tmp_path / "out" / "detections_by_image.json").read_text()).values()
    assert len(detections) > 0
