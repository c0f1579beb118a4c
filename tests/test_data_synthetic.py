"""Synthetic shapes: deterministic by seed, exact boxes, readable as records and as COCO JSON."""

import json

import numpy as np
import pytest

from efficientdet_tf.config import get_config
from efficientdet_tf.data.pipeline import build_dataset, source_from_spec
from efficientdet_tf.data.sources.base import TFRecordSource
from efficientdet_tf.data.sources.synthetic import SyntheticShapes


def all_annotations(dataset):
    return [dataset.annotations(i) for i in range(dataset.num_examples)]


def test_same_seed_same_data_other_seed_other_data():
    first, again = SyntheticShapes(6, (96, 128), seed=7), SyntheticShapes(6, (96, 128), seed=7)
    other = SyntheticShapes(6, (96, 128), seed=8)
    for i in range(6):
        np.testing.assert_array_equal(first.render(i), again.render(i))
        np.testing.assert_array_equal(first.annotations(i).boxes, again.annotations(i).boxes)
    assert any(
        not np.array_equal(first.render(i), other.render(i)) for i in range(6)
    )


def test_each_box_is_exactly_the_pixels_of_its_shape():
    height, width = 96, 128
    dataset = SyntheticShapes(12, (height, width), seed=3)
    shapes_seen = set()
    for i in range(dataset.num_examples):
        image, annotations = dataset.render(i), dataset.annotations(i)
        assert 1 <= annotations.num_boxes <= 3
        for box, class_id in zip(annotations.boxes.astype(int), annotations.classes):
            ymin, xmin, ymax, xmax = box
            # Look in the box grown by a pixel, within the object's own grid cell.
            cell_y, cell_x = (ymin + ymax) // 2 // (height // 2), (xmin + xmax) // 2 // (width // 2)
            top, left = max(ymin - 1, cell_y * height // 2), max(xmin - 1, cell_x * width // 2)
            bottom = min(ymax + 1, (cell_y + 1) * height // 2)
            right = min(xmax + 1, (cell_x + 1) * width // 2)
            region = image[top:bottom, left:right].astype(int)
            color = image[(ymin + ymax) // 2 + (ymax - ymin) // 4, (xmin + xmax) // 2]
            rows, cols = np.nonzero(np.all(region == color, axis=-1))
            found = (top + rows.min(), left + cols.min(), top + rows.max() + 1,
                     left + cols.max() + 1)
            assert found == (ymin, xmin, ymax, xmax), f"image {i}, class {class_id}"
            shapes_seen.add(int(class_id))
    assert shapes_seen == {1, 2, 3}


def test_writes_records_and_coco_json_that_match_the_generator(tmp_path):
    dataset = SyntheticShapes(5, (64, 80), seed=2)
    summary = dataset.write(tmp_path / "shapes", num_shards=2)
    assert summary.images_written == 5
    groundtruth = json.loads((tmp_path / "shapes.json").read_text())
    assert groundtruth == json.loads(json.dumps(dataset.coco_groundtruth()))
    assert len(groundtruth["annotations"]) == sum(a.num_boxes for a in all_annotations(dataset))

    source = TFRecordSource(str(tmp_path / "shapes-*.tfrecord"))
    examples = list(source.examples(shuffle=False, repeat=False))
    assert sorted(int(example["source_id"]) for example in examples) == [1, 2, 3, 4, 5]
    for example in examples:
        index = int(example["source_id"]) - 1
        np.testing.assert_array_equal(example["image"].numpy(), dataset.render(index))
        expected = dataset.annotations(index)
        np.testing.assert_allclose(example["boxes"].numpy(), expected.normalized_boxes(), rtol=1e-6)
        np.testing.assert_array_equal(example["classes"].numpy(), expected.classes)


def test_spec_names_a_split_with_its_own_seed_and_size():
    config = get_config("efficientdet-d0", "num_classes=3,image_size=64")
    train, val = source_from_spec("synthetic", config), source_from_spec("synthetic:val:8", config)
    assert val.num_examples == 8 and train.num_examples > val.num_examples
    assert (train.height, train.width) == (64, 64)
    assert not np.array_equal(train.render(0), val.render(0))
    with pytest.raises(ValueError, match="Unknown synthetic split 'test'"):
        source_from_spec("synthetic:test", config)

    images, labels = next(iter(build_dataset(val, config, is_training=False, batch_size=8)))
    assert images.shape == (8, 64, 64, 3)
    np.testing.assert_array_equal(labels["source_ids"].numpy(), np.arange(1, 9))
    first = val.annotations(0)
    groundtruth = labels["groundtruth_data"][0].numpy()
    # Official clipping to the last pixel row / column of the network input (64 x 64 here).
    np.testing.assert_allclose(
        groundtruth[: first.num_boxes, :4], np.minimum(first.boxes, 63), atol=1e-4
    )
    np.testing.assert_array_equal(groundtruth[: first.num_boxes, 6], first.classes)
    np.testing.assert_array_equal(groundtruth[first.num_boxes :, 6], -1)
