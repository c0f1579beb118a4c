"""Datasets as people keep them: 'voc:' folders of labelImg XML, 'csv:' files, the hold-out split,
and the {id: name} label map that training records in its config."""

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_in_process import run_cli
from official_fixture import SHARED_DIR
from PIL import Image
from small_models import TINY

from efficientdet_tf.config import ConfigError, get_config
from efficientdet_tf.data.pipeline import build_dataset, source_from_spec
from efficientdet_tf.data.sources.csv_annotations import CsvSource
from efficientdet_tf.data.sources.named_boxes import HoldOut
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.data.sources.voc_folder import VocFolderSource
from efficientdet_tf.label_map import class_names

BCCD = SHARED_DIR / "datasets" / "bccd" / "BCCD"
# Synthetic class ids renamed so that sorted names give other ids: apple 1, mango 2, zebra 3.
NAMES = {1: "zebra", 2: "apple", 3: "mango"}
SORTED_IDS = {1: 3, 2: 1, 3: 2}  # synthetic id -> id of its name in sorted order
NUM_IMAGES = 6


@pytest.fixture(scope="module")
def shapes():
    return SyntheticShapes(NUM_IMAGES, (48, 64), seed=3)


@pytest.fixture(scope="module")
def folder(shapes, tmp_path_factory):
    """images/*.png, labelImg-style annotations/*.xml and a header CSV of the same boxes."""
    root = tmp_path_factory.mktemp("labelled")
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    rows = []
    for index in range(NUM_IMAGES):
        truth = shapes.annotations(index)
        Image.fromarray(shapes.render(index)).save(root / "images" / truth.file_name)
        objects = "".join(
            f"<object><name>{NAMES[c]}</name><difficult>0</difficult><bndbox><xmin>{x0:g}</xmin>"
            f"<ymin>{y0:g}</ymin><xmax>{x1:g}</xmax><ymax>{y1:g}</ymax></bndbox></object>"
            for (y0, x0, y1, x1), c in zip(truth.boxes.tolist(), truth.classes.tolist()))
        (root / "annotations" / f"{Path(truth.file_name).stem}.xml").write_text(
            f"<annotation><folder>images</folder><filename>{truth.file_name}</filename><size>"
            f"<width>{truth.width}</width><height>{truth.height}</height><depth>3</depth></size>"
            f"{objects}</annotation>")
        rows += [[truth.file_name, truth.width, truth.height, NAMES[c], x0, y0, x1, y1]
                 for (y0, x0, y1, x1), c in zip(truth.boxes.tolist(), truth.classes.tolist())]
    write_csv(root / "boxes.csv",
              [["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"], *rows])
    return root


def write_csv(path, rows):
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return path


def expected_images(shapes, ids=SORTED_IDS):
    """{file name: (pixel boxes, class ids)} of the synthetic truth under `ids`."""
    return {truth.file_name: (truth.boxes, [ids[c] for c in truth.classes.tolist()])
            for truth in map(shapes.annotations, range(NUM_IMAGES))}


def read_images(source):
    return {image.file_name: (image.boxes, image.classes.tolist()) for image in source.images}


def assert_same_images(found, expected, atol=0.0):
    assert found.keys() == expected.keys()
    for name, (boxes, classes) in expected.items():
        np.testing.assert_allclose(found[name][0], boxes, atol=atol)
        assert found[name][1] == classes


def test_a_voc_folder_gives_its_boxes_with_ids_of_the_sorted_class_names(folder, shapes):
    source = source_from_spec(f"voc:{folder / 'annotations'}:{folder / 'images'}",
                              get_config("efficientdet-d0", TINY))

    assert source.class_names == {1: "apple", 2: "mango", 3: "zebra"}
    assert_same_images(read_images(source), expected_images(shapes))
    first = shapes.annotations(0)
    groundtruth = source.coco_groundtruth()
    assert [c["name"] for c in groundtruth["categories"]] == ["apple", "mango", "zebra"]
    assert len(groundtruth["annotations"]) == sum(
        shapes.annotations(i).num_boxes for i in range(NUM_IMAGES))
    # Through the input pipeline: the first image's boxes, normalized, in the decoded example.
    example = next(iter(source.examples(shuffle=False, repeat=False)))
    assert example["image"].shape == (48, 64, 3)
    np.testing.assert_allclose(example["boxes"].numpy(), first.boxes / [48, 64, 48, 64],
                               rtol=1e-6)
    assert example["classes"].numpy().tolist() == [SORTED_IDS[c] for c in first.classes]
    report = source.report()
    assert f"{NUM_IMAGES} images, {groundtruth['annotations'].__len__()} boxes, 3 classes " \
           "(1 apple, 2 mango, 3 zebra)" in report
    assert "skipped: nothing" in report


def test_a_label_map_gives_the_ids_and_its_unknown_classes_are_dropped_and_counted(
    folder, shapes
):
    config = get_config("efficientdet-d0", TINY).override(
        {"label_map": {1: "zebra", 2: "apple"}})
    source = source_from_spec(f"voc:{folder / 'annotations'}:{folder / 'images'}", config)

    mangoes = sum((shapes.annotations(i).classes == 3).sum() for i in range(NUM_IMAGES))
    assert mangoes > 0
    assert source.class_names == {1: "zebra", 2: "apple"}
    expected = {name: (boxes[np.array(classes) != 3], [c for c in classes if c != 3])
                for name, (boxes, classes) in expected_images(shapes, {1: 1, 2: 2, 3: 3}).items()}
    assert_same_images(read_images(source), expected)
    assert f"{mangoes} dropped: class 'mango' not in the label map" in source.report()


def test_unreadable_xml_missing_and_broken_images_are_skipped_and_counted(folder, tmp_path):
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    good = sorted((folder / "annotations").glob("*.xml"))[:2]
    for path in good:
        (annotations / path.name).write_text(path.read_text())
    (annotations / "truncated.xml").write_text("<annotation><filename>a.png</filen")
    (annotations / "no_image.xml").write_text(good[0].read_text().replace(
        "<filename>synthetic_", "<filename>absent_"))
    images = tmp_path / "images"
    images.mkdir()
    for path in good:
        name = f"{path.stem}.png"
        (images / name).write_bytes((folder / "images" / name).read_bytes())
    (annotations / "not_an_image.xml").write_text(good[1].read_text().replace(
        "<filename>synthetic_", "<filename>text_"))
    (images / good[1].name.replace("synthetic_", "text_").replace(".xml", ".png")).write_text("x")

    source = VocFolderSource(annotations, images)

    assert source.num_examples == 2
    assert source.skipped.count == 3
    report = source.report()
    assert "skipped 3: image not found: 1 (e.g. " in report and "absent_3_000000.png" in report
    assert "unreadable annotation XML: 1 (e.g. " in report and "truncated.xml" in report
    assert "unreadable image: 1 (e.g. " in report and "text_3_000001.png" in report


def test_a_header_csv_reads_like_the_voc_folder_in_any_column_order_skipping_bad_rows(
    folder, shapes, tmp_path
):
    with open(folder / "boxes.csv", newline="") as file:
        header, *rows = list(csv.reader(file))
    order = [7, 3, 0, 5, 2, 4, 1, 6]
    bad_rows = [["a.png", "64", "48", "apple", "1", "2", "x", "9"],
                ["", "64", "48", "apple", "1", "2", "3", "9"]]
    path = write_csv(tmp_path / "boxes.csv",
                     [[row[i] for i in order] for row in [header, *rows, *bad_rows]]
                     + [["b.png", "64"]])

    source = CsvSource(path, folder / "images")

    assert source.class_names == {1: "apple", 2: "mango", 3: "zebra"}
    assert_same_images(read_images(source), expected_images(shapes))
    lines = [f"{path}:{len(rows) + i}" for i in (2, 3, 4)]
    assert f"skipped 3: bad CSV row: 3 (e.g. {', '.join(lines)})" in source.report()


def test_an_automl_csv_is_normalized_and_its_set_is_picked(folder, shapes, tmp_path):
    rows = []
    for index in range(NUM_IMAGES):
        truth = shapes.annotations(index)
        split = "TRAIN" if index < 4 else "VALIDATION"
        for (y0, x0, y1, x1), c in zip(truth.boxes.tolist(), truth.classes.tolist()):
            rows.append([split, f"gs://bucket/shapes/{truth.file_name}", NAMES[c],
                         x0 / 64, y0 / 48, "", "", x1 / 64, y1 / 48, "", ""])
    rows.append(["TRAIN", "gs://bucket/shapes/no_boxes.png", "", "", "", "", "", "", "", "", ""])
    rows.append(["TRAIN", "gs://bucket/shapes/x.png", "apple", "0.1", "0.2", "", "", "1.5",
                 "0.9", "", ""])
    Image.new("RGB", (30, 20)).save(tmp_path / "no_boxes.png")
    images = tmp_path
    for name in (folder / "images").iterdir():
        (images / name.name).write_bytes(name.read_bytes())
    path = write_csv(tmp_path / "automl.csv", rows)

    train = CsvSource(path, images, set_name="train")
    validation = CsvSource(path, images, set_name="VALIDATION")

    expected = expected_images(shapes)
    train_names = [shapes.annotations(i).file_name for i in range(4)]
    no_boxes = (np.zeros([0, 4]), [])
    assert_same_images(read_images(train),
                       {**{n: expected[n] for n in train_names}, "no_boxes.png": no_boxes},
                       atol=1e-4)
    assert read_images(validation).keys() == {shapes.annotations(i).file_name for i in (4, 5)}
    assert f"skipped 1: bad CSV row: 1 (e.g. {path}:{len(rows)})" in train.report()
    with pytest.raises(ValueError, match="set 'holdout' is not one of TRAIN, VALIDATION"):
        CsvSource(path, images, set_name="holdout")


def test_the_hold_out_is_disjoint_complete_sized_and_independent_of_order():
    names = [f"image_{i:03d}.jpg" for i in range(200)]
    val = HoldOut("val", 15).keeps(names)
    train = HoldOut("train", 15).keeps(names)

    assert sum(val) == 30
    assert all(v != t for v, t in zip(val, train))
    shuffled = random.Random(0).sample(names, len(names))
    held_out = {n for n, keep in zip(names, val) if keep}
    assert {n for n, keep in zip(shuffled, HoldOut("val", 15).keeps(shuffled)) if keep} == held_out
    assert held_out != set(names[:30])  # picked by hash, not by listing order
    assert sum(HoldOut("val", 1).keeps(names[:10])) == 1  # never empty
    assert sum(HoldOut("train", 90).keeps(names[:2])) == 1  # never all of it


def test_hold_out_specs_split_one_folder_alike(folder):
    config = get_config("efficientdet-d0", TINY)
    spec = f"voc:{folder / 'annotations'}:{folder / 'images'}"
    train = source_from_spec(spec + ":train:34%", config)
    val = source_from_spec(spec + ":val:34%", config)

    train_names, val_names = set(read_images(train)), set(read_images(val))
    assert len(val_names) == 2 and len(train_names) == NUM_IMAGES - 2
    assert not train_names & val_names
    assert val.class_names == train.class_names == {1: "apple", 2: "mango", 3: "zebra"}
    assert "val part, 34% of the images (34% held out)" in val.report()


@pytest.mark.parametrize("suffix, message", [
    ("", "expected 'voc:<annotations_dir>:<images_dir>"),
    (":a:b:c", "expected 'voc:<annotations_dir>:<images_dir>"),
    (":val:100%", "with 0 < P < 100"),
    (":test:10%", "':train:<P>%' or ':val:<P>%'"),
])
def test_a_malformed_spec_names_the_expected_form(suffix, message):
    with pytest.raises(ValueError, match=message):
        source_from_spec("voc:annotations" + suffix, get_config("efficientdet-d0", TINY))


def test_a_folder_without_xml_files_says_which_comes_first(folder):
    with pytest.raises(FileNotFoundError, match="no .xml files in .*images.*annotations_dir"):
        source_from_spec(f"voc:{folder / 'images'}:{folder / 'annotations'}",
                         get_config("efficientdet-d0", TINY))


def test_a_label_map_mapping_is_kept_by_the_config_file_and_used_to_draw_names(tmp_path):
    config = get_config("efficientdet-d0", TINY).override({"label_map": {2: "b", 1: "a"}})
    config.save(tmp_path / "config.yaml")

    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["label_map"] == {1: "a", 2: "b"}
    reloaded = get_config(tmp_path / "config.yaml")
    assert reloaded == config
    assert class_names(reloaded) == {1: "a", 2: "b"}


@pytest.mark.parametrize("label_map, message", [
    ({1: "a", 4: "d"}, "class ids up to 4 but num_classes is 3; set num_classes=4"),
    ({0: "background"}, "class ids start at 1"),
    ({1: "a", 2: "a"}, "gives one name to several class ids"),
    ({"one": "a"}, "must map integer class ids to names"),
])
def test_a_bad_label_map_mapping_is_refused_naming_the_problem(label_map, message):
    with pytest.raises(ConfigError, match=message):
        get_config("efficientdet-d0", TINY).override({"label_map": label_map})


@pytest.mark.parametrize("kind", ["voc", "csv"])
def test_a_spec_names_the_kind_and_the_split(folder, kind):
    data = f"{folder / 'annotations'}" if kind == "voc" else f"{folder / 'boxes.csv'}"
    config = get_config("efficientdet-d0", TINY)
    splits = {split: source_from_spec(f"{kind}:{data}:{folder / 'images'}:{split}:34%", config)
              for split in ("train", "val")}
    assert (splits["train"].num_examples, splits["val"].num_examples) == (4, 2)
    assert splits["train"].class_names == {1: "apple", 2: "mango", 3: "zebra"}


@pytest.mark.skipif(not BCCD.is_dir(), reason=f"BCCD not found: {BCCD} (shared folder absent)")
def test_bccd_is_a_voc_folder_pair():
    config = get_config("efficientdet-d0", TINY)
    source = source_from_spec(f"voc:{BCCD / 'Annotations'}:{BCCD / 'JPEGImages'}:val:10%", config)

    assert source.num_examples == 36
    assert source.class_names == {1: "Platelets", 2: "RBC", 3: "WBC"}
    images, _ = next(iter(build_dataset(source, config, is_training=False, batch_size=2)))
    assert images.shape == (2, 64, 64, 3)


@pytest.mark.slow
def test_train_and_eval_runs_straight_from_the_spec_and_records_the_class_names(
        folder, tmp_path, capsys):
    """(A 'csv:' spec reads as this folder does: see the CSV tests above.)"""
    spec = f"voc:{folder / 'annotations'}:{folder / 'images'}"

    status = run_cli("--mode=train_and_eval", f"--model_dir={tmp_path}",
                     f"--train_file_pattern={spec}:train:34%",
                     f"--val_file_pattern={spec}:val:34%", "--batch_size=2", "--num_epochs=1",
                     f"--hparams={TINY}")

    out, err = capsys.readouterr()
    assert status == 0, err[-3000:]
    assert (f"{spec}:train:34%: 4 images, " in out
            and "boxes, 3 classes (1 apple, 2 mango, 3 zebra)" in out)
    assert f"{spec}:val:34%: 2 images, " in out
    assert "skipped: nothing" in out
    assert " - val_AP: " in out  # the epoch line of the progress bar
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["label_map"] == {1: "apple", 2: "mango", 3: "zebra"}
