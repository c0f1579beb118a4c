"""COCO evaluation: the evaluator against pycocotools itself, and evaluate() over a dataset."""

import contextlib
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from official_fixture import SHARED_DIR
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from efficientdet_tf.config import get_config
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.evaluation import METRIC_NAMES, CocoEvaluator, evaluate
from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.inference.postprocess import Detections
from efficientdet_tf.model.builder import build_model

COCO128_JSON = SHARED_DIR / "datasets" / "coco128" / "annotations" / "instances.json"
requires_coco128 = pytest.mark.skipif(
    not COCO128_JSON.is_file(), reason=f"shared dataset not found: {COCO128_JSON}"
)
# One BiFPN cell and one head repeat: evaluate() is the point, not the network's size.
SMALL = {"image_size": 128, "num_classes": 3, "fpn_cell_repeats": 1, "box_class_repeats": 1}


@pytest.fixture(scope="module")
def coco128():
    return json.loads(COCO128_JSON.read_text())


def as_detections(results: list[dict], size: int = 100) -> Detections:
    """One image's COCO results -> a batch-of-1 `Detections` padded to `size` rows."""
    boxes, scores, classes = np.zeros([1, size, 4]), np.zeros([1, size]), np.zeros([1, size])
    for row, result in enumerate(results):
        x, y, width, height = result["bbox"]
        boxes[0, row] = [y, x, y + height, x + width]
        scores[0, row], classes[0, row] = result["score"], result["category_id"]
    return Detections(boxes, scores, classes, np.array([len(results)]))


def feed(evaluator, groundtruth, results):
    """Adds every image of `groundtruth` with its results, one image per batch."""
    for image in groundtruth["images"]:
        mine = [r for r in results if r["image_id"] == image["id"]]
        evaluator.add_detections([image["id"]], as_detections(mine))


def groundtruth_as_results(groundtruth) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
         "score": 1.0}
        for a in groundtruth["annotations"]
    ]


def perturbed_results(groundtruth) -> list[dict]:
    """Every 3rd image's boxes shifted by 40% of their width, every 5th box dropped, and scores
    falling with the position in the file (so that the ranking matters)."""
    results = []
    for index, result in enumerate(groundtruth_as_results(groundtruth)):
        if index % 5 == 4:
            continue
        x, y, width, height = result["bbox"]
        if result["image_id"] % 3 == 0:
            x += 0.4 * width
        results.append({**result, "bbox": [x, y, width, height], "score": 1.0 - index / 2000})
    return results


def pycocotools_stats(groundtruth, results, category_ids=None) -> np.ndarray:
    """COCOeval.stats computed directly, optionally for some categories only."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = groundtruth
        coco.createIndex()
        coco_eval = COCOeval(coco, coco.loadRes([dict(r) for r in results]), iouType="bbox")
        if category_ids is not None:
            coco_eval.params.catIds = category_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


@requires_coco128
def test_groundtruth_as_detections_scores_ap_1(coco128):
    evaluator = CocoEvaluator(coco128)
    feed(evaluator, coco128, groundtruth_as_results(coco128))
    metrics = evaluator.evaluate()
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax100"):
        assert metrics[name] == pytest.approx(1.0), name
    per_class = {k: v for k, v in metrics.items() if k.startswith("AP_/")}
    assert len(per_class) == len({a["category_id"] for a in coco128["annotations"]})
    assert min(per_class.values()) == pytest.approx(1.0)


@requires_coco128
def test_perturbed_detections_score_what_pycocotools_computes(coco128, tmp_path):
    results = perturbed_results(coco128)
    evaluator = CocoEvaluator(coco128)
    feed(evaluator, coco128, results)
    metrics = evaluator.evaluate()

    expected = pycocotools_stats(coco128, results)
    np.testing.assert_allclose([metrics[name] for name in METRIC_NAMES], expected, atol=1e-12)
    assert 0.2 < metrics["AP"] < 0.9  # the perturbation really costs AP
    person, = pycocotools_stats(coco128, results, category_ids=[1])[:1]
    assert metrics["AP_/person"] == pytest.approx(person, abs=1e-12)

    path = evaluator.write_results(tmp_path / "detections.json")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = coco128
        coco.createIndex()
        loaded = coco.loadRes(str(path))
    assert len(loaded.getAnnIds()) == len(results)


@requires_coco128
def test_groundtruth_from_the_pipeline_layout_gives_the_same_metrics(coco128):
    """add_groundtruth (the input pipeline's groundtruth_data rows) == the JSON as ground truth."""
    images = coco128["images"][:16]
    image_ids = [image["id"] for image in images]
    subset = {**coco128, "images": images,
              "annotations": [a for a in coco128["annotations"] if a["image_id"] in image_ids]}
    results = perturbed_results(subset)
    rows = np.full([len(images), 50, 7], -1.0)
    rows[:, :, 4] = 0.0
    for i, image_id in enumerate(image_ids):
        objects = [a for a in subset["annotations"] if a["image_id"] == image_id]
        for j, a in enumerate(objects):
            x, y, width, height = a["bbox"]
            rows[i, j] = [y, x, y + height, x + width, a["iscrowd"], a["area"], a["category_id"]]

    collected = CocoEvaluator()
    collected.add_groundtruth(image_ids, rows)
    feed(collected, subset, results)
    from_json = CocoEvaluator(subset)
    feed(from_json, subset, results)
    got, want = collected.evaluate(), from_json.evaluate()
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], abs=1e-6), name


def test_detections_of_images_not_in_the_groundtruth_are_refused():
    groundtruth = {"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1}]}
    evaluator = CocoEvaluator(groundtruth)
    evaluator.add_detections([7], as_detections([]))
    with pytest.raises(ValueError, match="not in the ground truth"):
        evaluator.evaluate()


# --- evaluate(): a model over a dataset -----------------------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    """(compiled detector, config): compiled once (any batch size) for the tests of evaluate()."""
    config = get_config("efficientdet-d0", SMALL)
    return Detector(config, build_model(config)).compiled(), config


def event_tags(directory) -> set[str]:
    tags = set()
    for path in tf.io.gfile.glob(str(directory / "*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags |= {value.tag for value in event.summary.value}
    return tags


@pytest.mark.parametrize("eval_samples, expected_images", [(None, 10), (7, 7)])
def test_evaluate_covers_the_last_partial_batch_and_eval_samples(
    small_model, tmp_path, eval_samples, expected_images
):
    detector, config = small_model
    metrics = evaluate(
        detector, config, "synthetic:val:10", batch_size=4,
        eval_samples=eval_samples,
        summary_writer=tmp_path / "eval", step=5, results_file=tmp_path / "detections.json",
    )
    assert set(METRIC_NAMES) <= set(metrics)
    results = json.loads((tmp_path / "detections.json").read_text())
    assert sorted({r["image_id"] for r in results}) == list(range(1, expected_images + 1))
    assert len(results) == 100 * expected_images  # random weights: every image fills its 100 rows
    assert set(METRIC_NAMES) <= event_tags(tmp_path / "eval")


def test_tfrecords_and_their_json_give_the_same_metrics(small_model, tmp_path):
    """TFRecords carry their ground truth (groundtruth_data); the synthetic source has its JSON."""
    detector, config = small_model
    source = SyntheticShapes(6, config.image_size, seed=1)
    source.write(tmp_path / "val")
    from_records = evaluate(detector, config, str(tmp_path / "val-*"), batch_size=4)
    from_json = evaluate(detector, config, source, batch_size=4)
    for name in METRIC_NAMES:
        assert from_records[name] == pytest.approx(from_json[name], abs=1e-6), name


def test_a_missing_groundtruth_file_is_named(small_model, tmp_path):
    detector, config = small_model
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        evaluate(detector, config, "synthetic:val:2",
                 val_json_file=tmp_path / "nothing.json")
