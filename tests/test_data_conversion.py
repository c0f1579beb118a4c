"""Converting the shared COCO128 and BCCD datasets: records read back as the source annotations."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import yaml

from efficientdet_tf.data.converters import create_coco_tfrecord, create_pascal_tfrecord
from efficientdet_tf.data.sources.base import TFRecordSource

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
COCO128 = SHARED / "datasets" / "coco128"
BCCD = SHARED / "datasets" / "bccd" / "BCCD"
requires_coco128 = pytest.mark.skipif(
    not COCO128.is_dir(), reason=f"needs the shared COCO128 dataset at {COCO128}"
)
requires_bccd = pytest.mark.skipif(
    not BCCD.is_dir(), reason=f"needs the shared BCCD dataset at {BCCD}"
)


def read_back(pattern: str) -> dict[int, dict[str, np.ndarray]]:
    examples = TFRecordSource(pattern).examples(shuffle=False, repeat=False)
    return {int(e["source_id"]): {k: v.numpy() for k, v in e.items()} for e in examples}


def expected_objects(boxes_yxyx, height, width, classes, is_crowd, areas):
    """Boxes clipped to the image, empty ones dropped, normalized: computed here independently."""
    boxes = np.clip(np.array(boxes_yxyx, np.float64).reshape(-1, 4), 0, [height, width] * 2)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {
        "boxes": boxes[keep] / [height, width, height, width],
        "classes": np.array(classes)[keep],
        "is_crowd": np.array(is_crowd, bool)[keep],
        "areas": np.array(areas)[keep],
    }


def assert_objects_equal(example, expected):
    np.testing.assert_allclose(
        example["boxes"], expected["boxes"].reshape(-1, 4), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(example["classes"], expected["classes"])
    np.testing.assert_array_equal(example["is_crowd"], expected["is_crowd"])
    np.testing.assert_allclose(example["areas"], expected["areas"], rtol=1e-5)


@requires_coco128
def test_coco128_records_hold_the_json_boxes_and_classes(tmp_path):
    num_images = 48
    annotation_file = COCO128 / "annotations" / "instances.json"
    summary = create_coco_tfrecord.convert(
        annotation_file, COCO128 / "images", tmp_path / "coco", num_shards=3, num_images=num_images
    )
    assert summary.images_written == num_images and not summary.images_skipped
    coco = json.loads(annotation_file.read_text())
    examples = read_back(str(tmp_path / "coco-*-of-00003.tfrecord"))
    assert len(examples) == num_images
    crowds = 0
    for image in coco["images"][:num_images]:
        objects = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        crowds += sum(a["iscrowd"] for a in objects)
        expected = expected_objects(
            [[y, x, y + h, x + w] for x, y, w, h in (a["bbox"] for a in objects)],
            image["height"], image["width"],
            [a["category_id"] for a in objects], [a["iscrowd"] for a in objects],
            [a["area"] for a in objects],
        )
        example = examples[image["id"]]
        assert example["image"].shape == (image["height"], image["width"], 3)
        assert_objects_equal(example, expected)
    assert crowds > 0  # the subset exercises is_crowd


@requires_bccd
def test_bccd_val_records_and_json_hold_the_xml_boxes(tmp_path):
    num_images = 30
    output = tmp_path / "bccd_val"
    summary = create_pascal_tfrecord.convert(
        BCCD, "val", output, num_shards=2, num_images=num_images
    )
    assert summary.images_written == num_images
    label_map = yaml.safe_load(Path(f"{output}_label_map.yaml").read_text())
    assert label_map == {1: "Platelets", 2: "RBC", 3: "WBC"}
    class_ids = {name: class_id for class_id, name in label_map.items()}

    examples = read_back(f"{output}-*.tfrecord")
    groundtruth = json.loads(Path(f"{output}.json").read_text())
    ids_by_name = {image["file_name"]: image["id"] for image in groundtruth["images"]}
    example_ids = (BCCD / "ImageSets" / "Main" / "val.txt").read_text().split()[:num_images]
    for example_id in example_ids:
        root = ElementTree.parse(BCCD / "Annotations" / f"{example_id}.xml").getroot()
        height, width = int(root.findtext("size/height")), int(root.findtext("size/width"))
        boxes, names = [], []
        for obj in root.iter("object"):
            keys = ("ymin", "xmin", "ymax", "xmax")
            boxes.append([float(obj.findtext(f"bndbox/{key}")) for key in keys])
            names.append(obj.findtext("name").strip())
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        expected = expected_objects(boxes, height, width, [class_ids[n] for n in names],
                                    [0] * len(boxes), areas)
        image_id = ids_by_name[root.findtext("filename")]
        assert_objects_equal(examples[image_id], expected)
        json_boxes = [a["bbox"] for a in groundtruth["annotations"] if a["image_id"] == image_id]
        np.testing.assert_allclose(
            np.array(json_boxes).reshape(-1, 4),
            [[x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]
             for y0, x0, y1, x1 in expected["boxes"]],
            atol=1e-3,
        )


@pytest.mark.slow  # worker processes, each importing TensorFlow
@requires_coco128
def test_coco_converter_command_line_with_worker_processes(tmp_path):
    command = [
        sys.executable, "-m", "efficientdet_tf.data.converters.create_coco_tfrecord",
        f"--image_dir={COCO128 / 'images'}",
        f"--object_annotations_file={COCO128 / 'annotations' / 'instances.json'}",
        f"--output_file_prefix={tmp_path / 'cli'}", "--num_shards=2", "--num_images=6",
        "--num_workers=2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Wrote 6 images with" in result.stdout
    assert len(read_back(str(tmp_path / "cli-*"))) == 6
