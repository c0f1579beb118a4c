"""Bad inputs are converted, clipped, dropped or skipped with a count, and never stop training."""

import io
import json

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.data.converters.create_coco_tfrecord import convert
from efficientdet_tf.data.formats.annotations import ImageAnnotations
from efficientdet_tf.data.formats.images import EncodedImage
from efficientdet_tf.data.formats.tfrecord_format import make_example
from efficientdet_tf.data.pipeline import build_dataset
from efficientdet_tf.data.sources.base import TFRecordSource
from efficientdet_tf.data.sources.coco import CocoJsonSource

SIZE = (48, 64)  # height, width of every test image


def encoded(mode: str, image_format: str, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*SIZE, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).convert(mode).save(buffer, format=image_format)
    return buffer.getvalue()


# file name -> (file bytes or None for a missing file, COCO boxes [x, y, width, height])
BAD_AND_ODD_IMAGES = {
    "boxes_in_and_out.jpg": (
        encoded("RGB", "JPEG"),
        [[4, 4, 20, 20], [50, 30, 30, 30], [70, 10, 5, 5], [10, 10, 0, 8]],
    ),
    "grayscale.jpg": (encoded("L", "JPEG"), [[5, 5, 10, 10]]),
    "cmyk.jpg": (encoded("CMYK", "JPEG"), [[5, 5, 10, 10]]),
    "rgba.png": (encoded("RGBA", "PNG"), [[5, 5, 10, 10]]),
    "no_boxes.jpg": (encoded("RGB", "JPEG", seed=1), []),
    "many_boxes.jpg": (encoded("RGB", "JPEG", seed=2), [[i * 8, 2, 6, 6] for i in range(6)]),
    "corrupt.jpg": (b"\x00not an image at all" * 10, [[5, 5, 10, 10]]),
    "truncated.jpg": (encoded("RGB", "JPEG", seed=3)[:400], [[5, 5, 10, 10]]),
    "empty.jpg": (b"", [[5, 5, 10, 10]]),
    "missing.jpg": (None, [[5, 5, 10, 10]]),
}
GOOD_IMAGES = ["boxes_in_and_out.jpg", "grayscale.jpg", "cmyk.jpg", "rgba.png", "no_boxes.jpg",
               "many_boxes.jpg"]


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory):
    """A COCO JSON and image folder with every kind of bad and odd input."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "images").mkdir()
    images, annotations = [], []
    for image_id, (name, (data, boxes)) in enumerate(BAD_AND_ODD_IMAGES.items(), start=1):
        if data is not None:
            (root / "images" / name).write_bytes(data)
        images.append({"id": image_id, "file_name": name, "height": SIZE[0], "width": SIZE[1]})
        for box in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": box,
                                "category_id": 1, "iscrowd": 0, "area": box[2] * box[3]})
    categories = [{"id": 1, "name": "thing"}]
    annotation_file = root / "instances.json"
    annotation_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return annotation_file, root / "images"


def image_ids(*names):
    return {list(BAD_AND_ODD_IMAGES).index(name) + 1 for name in names}


def test_converter_skips_converts_clips_and_counts(coco_dataset, tmp_path):
    annotation_file, image_dir = coco_dataset
    summary = convert(annotation_file, image_dir, tmp_path / "bad", num_shards=2)
    assert summary.images_written == len(GOOD_IMAGES)
    assert summary.images_skipped == {
        "unreadable image (corrupt or truncated)": 2, "empty file": 1, "file not found": 1,
    }
    assert sorted(summary.skipped_files) == [
        "corrupt.jpg", "empty.jpg", "missing.jpg", "truncated.jpg",
    ]
    assert summary.image_notes == {"JPEG CMYK re-encoded as PNG": 1}
    assert summary.boxes_changed == {
        "clipped to the image": 1, "dropped: zero area or outside the image": 2,
    }
    assert summary.images_without_boxes == 1 and summary.boxes_written == 2 + 1 + 1 + 1 + 6
    report = summary.report()
    assert "Images skipped: 4" in report and "corrupt.jpg" in report

    examples = list(TFRecordSource(str(tmp_path / "bad-*")).examples(shuffle=False, repeat=False))
    assert {int(e["source_id"]) for e in examples} == image_ids(*GOOD_IMAGES)
    for example in examples:
        assert example["image"].shape == (*SIZE, 3)
        if int(example["source_id"]) == image_ids("boxes_in_and_out.jpg").pop():
            expected = np.array([[4, 4, 24, 24], [30, 50, 48, 64]]) / [48, 64, 48, 64]
            np.testing.assert_allclose(example["boxes"].numpy(), expected, rtol=1e-6)


def test_training_from_coco_json_survives_bad_images(coco_dataset, caplog):
    config = get_config("efficientdet-d0", "num_classes=1,image_size=64,max_instances_per_image=4")
    source = CocoJsonSource(*coco_dataset)  # the missing file is left out here, with a warning
    assert source.num_examples == len(BAD_AND_ODD_IMAGES) - 1
    training = build_dataset(source, config, is_training=True, batch_size=2)
    for images, _labels in training.take(8):  # several epochs' worth of good images
        assert images.shape == (2, 64, 64, 3)
        assert np.all(np.isfinite(images.numpy()))
    evaluation = build_dataset(source, config, is_training=False, batch_size=1)
    groundtruth = {int(batch["source_ids"][0]): batch["groundtruth_data"][0].numpy()
                   for _, batch in evaluation}
    assert set(groundtruth) == image_ids(*GOOD_IMAGES)
    assert np.all(groundtruth[image_ids("many_boxes.jpg").pop()][:, 6] == 1)  # 4 of 6 kept
    assert np.all(groundtruth[image_ids("no_boxes.jpg").pop()][:, 6] == -1)
    assert "has 6 objects; groundtruth_data keeps 4" in caplog.text


def test_tfrecords_with_a_corrupt_image_bad_labels_or_unknown_class_are_read_on(tmp_path, caplog):
    annotations = ImageAnnotations(1, "a.jpg", *SIZE, [[4, 4, 20, 20], [10, 10, 30, 30]],
                                   [1, 5], [0, 0], [256, 400])
    good = EncodedImage(encoded("RGB", "JPEG"), "jpeg", *SIZE)
    corrupt = EncodedImage(b"garbage", "jpeg", *SIZE)
    examples = []
    for image_id, image in enumerate([good, corrupt, good, good], start=1):
        annotations.image_id = image_id
        examples.append(make_example(image, annotations, {1: "thing"}))
    del examples[3].features.feature["image/object/class/label"].int64_list.value[1:]
    path = str(tmp_path / "mixed.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            writer.write(example.SerializeToString())
    config = get_config("efficientdet-d0", "num_classes=3,image_size=64")
    evaluation = build_dataset(path, config, is_training=False, batch_size=4)
    (_, labels), = list(evaluation)  # the corrupt image and the box without a label are left out
    np.testing.assert_array_equal(labels["source_ids"].numpy(), [1, 3])
    np.testing.assert_array_equal(labels["groundtruth_data"][:, :2, 6].numpy(), [[1, -1], [1, -1]])
    assert "has class ids outside 1 .. 3; dropped those boxes: [5]" in caplog.text


def test_missing_inputs_are_errors_that_name_them(tmp_path, coco_dataset):
    pattern = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(FileNotFoundError, match="No TFRecord files match .*nothing-"):
        TFRecordSource(pattern)
    config = get_config("efficientdet-d0", "num_classes=1,image_size=64")
    with pytest.raises(FileNotFoundError, match="nothing-"):
        build_dataset(pattern, config, is_training=True, batch_size=2)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        CocoJsonSource(tmp_path / "absent.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        CocoJsonSource(coco_dataset[0], tmp_path / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="None of the 10 images"):
        CocoJsonSource(coco_dataset[0], tmp_path)
    two_classes = get_config("efficientdet-d0", "num_classes=2,image_size=64")
    with pytest.raises(ValueError, match="class ids up to 3 but num_classes is 2"):
        build_dataset("synthetic:val:4", two_classes, is_training=False, batch_size=1)
