"""COCO test-dev: the detections of images without labels, written as the COCO evaluation
server's results file (`--mode=eval --testdev_dir`, `ObjectDetector.evaluate(testdev_dir=...)`),
from a `coco:` spec of an image_info JSON or from TFRecords of one (the converter's
`--image_info_file`). The model is the shared exported set's checkpoint (`exported_files.py`)."""

import json
import zipfile

import numpy as np
import pytest
from cli_in_process import run_cli
from detection_matching import match_detections
from exported_files import shared_config
from PIL import Image
from pycocotools.coco import COCO

from efficientdet_tf.data.converters.create_coco_tfrecord import convert
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.evaluation.model_evaluation import TESTDEV_RESULTS_FILE_NAME
from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.object_detector import ObjectDetector

# COCO's own ids (not 1, 2, 3) and sizes other than the network input's 128 x 128.
IMAGES = {397133: (90, 120), 37777: (100, 70), 252219: (128, 96)}


@pytest.fixture
def image_info(tmp_path):
    """An image_info JSON as COCO test-dev's (images and categories, no annotations) and its
    image folder: (json path, image folder)."""
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    images = []
    for seed, (image_id, (height, width)) in enumerate(IMAGES.items()):
        file_name = f"{image_id:012d}.png"
        pixels = SyntheticShapes(1, (height, width), seed=seed).render(0)
        Image.fromarray(pixels).save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    categories = [{"id": i, "name": name} for i, name in ((1, "circle"), (2, "square"),
                                                           (3, "triangle"))]
    path = tmp_path / "image_info_test-dev.json"
    path.write_text(json.dumps({"images": images, "categories": categories}))
    return path, image_dir


@pytest.fixture(scope="module")
def model_flags(exported_files, tmp_path_factory):
    config_file = tmp_path_factory.mktemp("config") / "config.yaml"
    shared_config().save(config_file)
    return f"--model_name={config_file}", f"--ckpt={exported_files['checkpoint']}"


def cli(capfd, *args):
    """`efficientdet *args` in process: (exit status, stdout, stderr)."""
    capfd.readouterr()
    status = run_cli(*args)
    printed = capfd.readouterr()
    return status, printed.out, printed.err


def read_back(testdev_dir, info_path) -> COCO:
    """The results file as the COCO server reads it: `loadRes` against the image_info JSON;
    the zip holds the same file."""
    results = testdev_dir / TESTDEV_RESULTS_FILE_NAME
    with zipfile.ZipFile(results.with_suffix(".zip")) as zipped:
        assert zipped.namelist() == [TESTDEV_RESULTS_FILE_NAME]
        assert zipped.read(TESTDEV_RESULTS_FILE_NAME) == results.read_bytes()
    return COCO(str(info_path)).loadRes(str(results))


def written_detections(results: COCO, image_id: int):
    """(boxes [N, 4] ymin, xmin, ymax, xmax in pixels, scores, category ids) of one image."""
    written = results.loadAnns(results.getAnnIds(imgIds=[image_id]))
    x, y, width, height = np.array([d["bbox"] for d in written]).reshape(-1, 4).T
    return (np.stack([y, x, y + height, x + width], -1), np.array([d["score"] for d in written]),
            np.array([d["category_id"] for d in written]))


def predicted(outputs):
    """(boxes, scores, classes) of the first image of a runner's outputs."""
    count = int(np.asarray(outputs["num_detections"])[0])
    return tuple(np.asarray(outputs[name])[0, :count]
                 for name in ("detection_boxes", "detection_scores", "detection_classes"))


def assert_same_detections(expected, actual):
    """The same set (`detection_matching`): 100 detections (random weights: every row scores
    above 0), classes equal, scores within 1e-4, boxes overlapping at IoU 0.98 or more."""
    assert len(expected[1]) == len(actual[1]) == 100
    match = match_detections(expected, actual, score_tolerance=1e-4, min_iou=0.98)
    assert match.num_matched == 100


def test_testdev_file_of_an_unlabeled_coco_spec_holds_the_detections_of_each_image(
        image_info, model_flags, shared_network, tmp_path, capfd):
    info_path, image_dir = image_info
    testdev_dir = tmp_path / "testdev"
    status, out, err = cli(capfd, "--mode=eval", *model_flags,
                           f"--val_file_pattern=coco:{info_path}:{image_dir}", "--batch_size=2",
                           f"--testdev_dir={testdev_dir}")
    assert status == 0, err[-3000:]
    assert f"written to {testdev_dir / TESTDEV_RESULTS_FILE_NAME} and " in out
    assert "AP" not in out  # no metrics

    results = read_back(testdev_dir, info_path)
    assert sorted(results.getImgIds()) == sorted(IMAGES)
    detector = Detector(shared_network[1], shared_network[0])  # eager: no tracing
    for image_id in IMAGES:
        pixels = np.asarray(Image.open(image_dir / f"{image_id:012d}.png"))
        assert_same_detections(predicted(detector(pixels[np.newaxis])),
                               written_detections(results, image_id))


def test_unlabeled_data_without_testdev_dir_names_the_flag(
        image_info, model_flags, tmp_path, capfd):
    info_path, image_dir = image_info
    spec = f"--val_file_pattern=coco:{info_path}:{image_dir}"
    status, _, err = cli(capfd, "--mode=eval", *model_flags, spec)
    assert status == 2
    assert (f"error: {info_path} lists images only (no 'annotations'), as COCO's image_info "
            "files do: there is no ground truth to score.") in err
    assert "--testdev_dir=<folder>" in err and "Traceback" not in err

    status, _, err = cli(capfd, "--mode=eval", *model_flags, spec, f"--eval_dir={tmp_path}",
                         f"--testdev_dir={tmp_path}")
    assert status == 2
    assert "error: --testdev_dir writes the detections of images without labels, unscored: " \
        "leave out --eval_dir." in err


def test_tfrecords_of_an_image_info_file_give_the_same_testdev_file(
        image_info, exported_files, tmp_path):
    info_path, image_dir = image_info
    summary = convert(None, image_dir, tmp_path / "records/test-dev", num_shards=1,
                      image_info_file=info_path)
    assert summary.images_written == 3
    detector = ObjectDetector(shared_config())
    detector.load_pretrained(exported_files["checkpoint"])
    assert detector.evaluate(str(tmp_path / "records/test-dev-*"), batch_size=2,
                             testdev_dir=tmp_path) == {}

    results = read_back(tmp_path, info_path)
    assert sorted(results.getImgIds()) == sorted(IMAGES)
    for image_id in IMAGES:
        pixels = np.asarray(Image.open(image_dir / f"{image_id:012d}.png"))
        assert_same_detections(predicted(detector.predict(pixels[np.newaxis])),
                               written_detections(results, image_id))


def test_training_on_an_image_info_json_is_refused(image_info, capfd, tmp_path):
    """Images without objects would train the heads on background only."""
    path, image_dir = image_info
    config_file = tmp_path / "config.yaml"
    shared_config().save(config_file)
    status, _, err = cli(capfd, "--mode=train", f"--model_name={config_file}",
                         f"--train_file_pattern=coco:{path}:{image_dir}",
                         f"--model_dir={tmp_path / 'run'}")
    assert status == 2
    assert err.strip().splitlines()[-1].endswith(
        f"error: The training data coco:{path}:{image_dir} holds no labeled objects: nothing to "
        "learn from. Give annotated data (its detections can still be written with --mode=eval "
        "--testdev_dir).")
