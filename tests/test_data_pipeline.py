"""The tf.data pipeline: batch format, epochs, sharding, and each kind of source."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from efficientdet_tf.anchors import Anchors
from efficientdet_tf.config import get_config
from efficientdet_tf.data.pipeline import build_dataset, source_from_spec
from efficientdet_tf.data.sources.synthetic import SyntheticShapes

COCO128 = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "coco128"
CONFIG = get_config("efficientdet-d0", "num_classes=3,image_size=64,max_instances_per_image=5")


@pytest.fixture(scope="module")
def synthetic_records(tmp_path_factory):
    """9 synthetic images in 2 TFRecord files."""
    prefix = tmp_path_factory.mktemp("records") / "shapes"
    SyntheticShapes(9, (48, 72), seed=5).write(prefix, num_shards=2)
    return f"{prefix}-*.tfrecord"


def test_training_batches_have_the_documented_format(synthetic_records):
    dataset = build_dataset(synthetic_records, CONFIG, is_training=True, batch_size=4)
    anchors = Anchors.from_config(CONFIG)
    for images, labels in dataset.take(5):  # beyond one epoch: training repeats
        assert images.shape == (4, 64, 64, 3) and images.dtype == tf.float32
        for level in anchors.levels:
            height, width = anchors.level_sizes[level]
            assert labels[f"cls_targets_{level}"].shape == (4, height, width, 9)
            assert labels[f"box_targets_{level}"].shape == (4, height, width, 36)
        assert labels["groundtruth_data"].shape == (4, 5, 7)
        assert labels["source_ids"].dtype == tf.int64 and labels["image_scales"].shape == (4,)
        positives = sum(
            tf.reduce_sum(tf.cast(labels[f"cls_targets_{level}"] >= 0, tf.float32))
            for level in anchors.levels
        )
        np.testing.assert_allclose(labels["mean_num_positives"].numpy(), positives / 4, rtol=1e-6)
        assert set(labels) == {
            *(f"{kind}_targets_{level}" for kind in ("cls", "box") for level in anchors.levels),
            "mean_num_positives", "source_ids", "image_scales", "groundtruth_data",
        }


def test_training_data_is_shuffled_and_a_seed_repeats_its_order(synthetic_records):
    def first_ids(seed):
        """Source ids of the first 16 training images (of 9)."""
        dataset = build_dataset(synthetic_records, CONFIG, is_training=True, batch_size=4,
                                seed=seed)
        assert dataset.options().deterministic == (seed is not None)
        return [int(i) for _, labels in dataset.take(4) for i in labels["source_ids"]]

    in_file_order = [int(i) for _, labels in
                     build_dataset(synthetic_records, CONFIG, is_training=False, batch_size=4)
                     for i in labels["source_ids"]]
    seeded = first_ids(seed=3)
    assert set(seeded) <= set(in_file_order) and seeded[:9] != in_file_order
    assert first_ids(seed=3) == seeded
    assert first_ids(seed=4) != seeded
    # Unseeded: shuffled too (9 images: file order by chance about once in 9! = 362880 runs).
    unseeded = first_ids(seed=None)
    assert set(unseeded) <= set(in_file_order) and unseeded[:9] != in_file_order


def test_evaluation_reads_every_image_once_in_order_keeping_the_last_batch(synthetic_records):
    batches = list(build_dataset(synthetic_records, CONFIG, is_training=False, batch_size=4))
    assert [len(images) for images, _ in batches] == [4, 4, 1]
    source_ids = np.concatenate([labels["source_ids"].numpy() for _, labels in batches])
    assert sorted(source_ids) == list(range(1, 10))


def test_regenerate_source_id_hashes_the_image_bytes(synthetic_records):
    """official TfExampleDecoder(regenerate_source_id=True): the id is a hash of image/encoded,
    whatever image/source_id says."""
    records = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(synthetic_records)))
    encoded = [tf.io.parse_single_example(
        record, {"image/encoded": tf.io.FixedLenFeature((), tf.string)})["image/encoded"]
        for record in records]
    expected = sorted(int(tf.strings.to_hash_bucket_fast(e, 2**31 - 1)) for e in encoded)
    config = CONFIG.override("regenerate_source_id=true")
    batches = build_dataset(synthetic_records, config, is_training=False, batch_size=9)
    source_ids = next(iter(batches))[1]["source_ids"].numpy()
    assert sorted(source_ids) == expected and not set(expected) & set(range(1, 10))


@pytest.mark.parametrize("shard_by", ["files", "records", "indices"])
def test_input_pipelines_read_disjoint_shards(shard_by, synthetic_records):
    spec = {
        "files": synthetic_records,
        "records": synthetic_records.replace("*", "00000-of-00002"),  # one file for 2 pipelines
        "indices": "synthetic:val:9",
    }[shard_by]
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id)
        dataset = build_dataset(
            spec, CONFIG, is_training=False, batch_size=2, input_context=context
        )
        seen.append({int(i) for _, labels in dataset for i in labels["source_ids"]})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    if shard_by != "records":
        assert seen[0] | seen[1] == set(range(1, 10))


@pytest.mark.skipif(not COCO128.is_dir(), reason=f"needs the shared COCO128 dataset at {COCO128}")
def test_coco_json_spec_evaluates_with_boxes_mapped_back_to_the_image():
    annotation_file = COCO128 / "annotations" / "instances.json"
    config = get_config("efficientdet-d0", "image_size=128")
    source = source_from_spec(f"coco:{annotation_file}:{COCO128 / 'images'}", config)
    assert source.num_examples == 128 and source.coco_groundtruth()["images"]
    images, labels = next(iter(build_dataset(source, config, is_training=False, batch_size=6)))
    coco = json.loads(annotation_file.read_text())
    for row, image_id in enumerate(labels["source_ids"].numpy()):
        image = next(i for i in coco["images"] if i["id"] == image_id)
        objects = [a for a in coco["annotations"] if a["image_id"] == image_id][:100]
        size = np.array([image["height"], image["width"]], np.float64)
        scale = 1 / labels["image_scales"][row].numpy()
        on_input = np.floor(size * scale) / size  # the resized image, in whole pixels
        expected = [
            np.clip(np.array([y, x, y + h, x + w]) * np.tile(on_input, 2), 0, 127) / scale
            for x, y, w, h in (a["bbox"] for a in objects)
        ]
        groundtruth = labels["groundtruth_data"][row].numpy()[: len(objects)]
        np.testing.assert_allclose(groundtruth[:, :4], np.reshape(expected, (-1, 4)), atol=1e-2)
        np.testing.assert_array_equal(groundtruth[:, 6], [a["category_id"] for a in objects])
        np.testing.assert_array_equal(groundtruth[:, 4], [a["iscrowd"] for a in objects])
