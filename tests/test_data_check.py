"""`check_data` and --mode=check_data: counts of planted labelling mistakes, each named in a
warning; no warning on clean data; weakly matched boxes; the drawings."""

import json

import numpy as np
import pytest
from cli_in_process import run_cli
from PIL import Image
from small_models import TINY

from efficientdet_tf.anchors import Anchors
from efficientdet_tf.config import get_config
from efficientdet_tf.diagnostics.data_check import Boxes, check_data, dataset_report

SIZE = 64  # images and network input (TINY), so that boxes keep their pixel sizes
CATEGORIES = {1: "cat", 2: "Cat", 3: "dog", 5: "bird"}
GOOD = [10, 10, 40, 40]  # COCO x, y, width, height: 40 px, IoU 0.64 with a 32 px anchor
# image -> [(bbox, category)]; the planted mistakes:
PLANTED = {
    1: [(GOOD, 1), ([0.1, 0.1, 0.5, 0.5], 3)],       # a box in fractions of the image
    2: [(GOOD, 2), ([30, 30, 4, 4], 3)],              # "Cat" beside "cat"; a 4 px box
    3: [(GOOD, 5), ([0.2, 0.3, 0.4, 0.4], 1)],       # class id 5 > num_classes 3; fractions
    4: [(GOOD, 3)],
    5: [],                                            # an image without boxes
}


def write_coco_folder(root, images, categories):
    """images/<id>.png (SIZE x SIZE) and annotations.json; returns the 'coco:' spec."""
    (root / "images").mkdir(parents=True)
    entries, objects = [], []
    for image_id, boxes in images.items():
        Image.new("RGB", (SIZE, SIZE), (90, 120, 150)).save(root / "images" / f"{image_id}.png")
        entries.append({"id": image_id, "file_name": f"{image_id}.png", "height": SIZE,
                        "width": SIZE})
        objects += [{"id": len(objects) + 1, "image_id": image_id, "category_id": category,
                     "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}
                    for bbox, category in boxes]
    (root / "annotations.json").write_text(json.dumps({
        "images": entries, "annotations": objects,
        "categories": [{"id": i, "name": name} for i, name in categories.items()]}))
    return f"coco:{root / 'annotations.json'}:{root / 'images'}"


@pytest.fixture(scope="module")
def config():
    return get_config("efficientdet-d0", TINY)


@pytest.fixture(scope="module")
def planted(config, tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    spec = write_coco_folder(root / "data", PLANTED, CATEGORIES)
    return check_data(config, spec, root / "check", num_images=2), root / "check"


def test_planted_mistakes_are_counted(planted):
    report, _ = planted
    assert report["images"] == 5 and report["boxes"] == 7
    assert report["boxes_per_class"] == {"cat": 2, "Cat": 1, "dog": 3, "bird": 1}
    assert report["mistakes"] == {
        "fraction_boxes": 2, "pixel_boxes": 0, "too_small_boxes": 1,
        "case_variant_names": [["Cat", "cat"]], "class_ids_above_num_classes": 1,
        "images_without_boxes": 1, "class_imbalance": 3.0,
    }
    assert report["skipped"] == {"images": {}, "boxes": {}}


def test_each_planted_mistake_is_named_in_a_warning(planted):
    warnings = planted[0]["warnings"]
    assert len(warnings) == 5
    assert "2 boxes" in warnings[0] and "fractions" in warnings[0]
    assert "1 boxes are too small" in warnings[1] and "smallest anchor 32 px" in warnings[1]
    assert "'Cat' (1 boxes), 'cat' (2 boxes)" in warnings[2]
    assert "1 boxes have class ids above num_classes=3" in warnings[3]
    assert "1 of 5 images have no box" in warnings[4]


def test_report_files_and_drawings(planted):
    _, directory = planted
    assert json.loads((directory / "report.json").read_text())["boxes"] == 7
    markdown = (directory / "report.md").read_text()
    assert "| 2 | Cat | 1 | 1 | 0 | 0 | 40.0 |" in markdown
    assert Image.open(directory / "box_sizes.png").size == (800, 450)
    samples = sorted((directory / "samples").glob("*.png"))
    assert [Image.open(path).size for path in samples] == [(SIZE, SIZE)] * 2


def test_clean_data_gives_no_warning(config, tmp_path):
    spec = write_coco_folder(tmp_path / "data", {1: [(GOOD, 1)], 2: [(GOOD, 2)]},
                             {1: "cat", 2: "dog"})
    report = check_data(config, spec, tmp_path / "check", val_spec=spec, num_images=0)
    assert report["warnings"] == [] and report["validation"]["warnings"] == []
    assert report["weakly_matched_boxes"] == 0
    assert not (tmp_path / "check" / "samples").exists()


def test_weakly_matched_boxes(config):
    """A box exactly on an anchor is matched; one far smaller than any anchor is counted."""
    anchors = Anchors.from_config(config)
    inside = np.all((anchors.boxes >= 0) & (anchors.boxes <= SIZE), axis=1)
    on_anchor = anchors.boxes[np.flatnonzero(inside)[0]]
    tiny = [30, 30, 32, 32]
    boxes = Boxes(image_sizes=np.array([[SIZE, SIZE]]), image_index=np.array([0, 0]),
                  normalized=np.array([on_anchor, tiny]) / SIZE, classes=np.array([1, 2]))
    report = dataset_report(boxes, {1: "on anchor", 2: "tiny"}, config, anchors, "hand-made")
    assert report["weakly_matched_boxes"] == 1
    assert [row["weakly_matched"] for row in report["per_class"]] == [0, 1]


def test_pixels_in_a_format_of_fractions_are_counted(config):
    """TFRecords hold fractions of the image size; pixels there reach beyond the image."""
    boxes = Boxes(image_sizes=np.array([[SIZE, SIZE]]), image_index=np.array([0, 0]),
                  normalized=np.array([[0.1, 0.1, 0.6, 0.6], [0, 0, 50, 50]]),
                  classes=np.array([1, 1]))
    report = dataset_report(boxes, {1: "cat"}, config, Anchors.from_config(config), "records")
    assert report["mistakes"]["pixel_boxes"] == 1
    assert "1 boxes reach beyond their image in a format of fractions" in report["warnings"][0]


def test_the_check_data_mode_prints_the_warnings_and_names_its_flags(tmp_path, capsys):
    spec = write_coco_folder(tmp_path / "data", {1: [([0.1, 0.1, 0.5, 0.5], 1)]}, {1: "cat"})
    flags = ["--mode=check_data", "--model_name=efficientdet-d0", f"--hparams={TINY}",
             f"--train_file_pattern={spec}"]
    assert run_cli(*flags) == 2
    assert "--mode=check_data needs --train_file_pattern" in capsys.readouterr().err
    assert run_cli(*flags, f"--output_dir={tmp_path / 'check'}", "--num_images=0") == 0
    printed = capsys.readouterr().out
    assert "training data: 1 images, 1 boxes, 1 weakly matched" in printed
    assert "warning: 1 boxes end within the first pixel" in printed
    assert (tmp_path / "check" / "report.md").is_file()
