"""Dataset specs on the command line: a malformed one is a one-line usage error in every mode,
and `--mode=infer --input_image` takes the specs training and evaluation take."""

import json
from pathlib import Path

import pytest
from cli_in_process import run_cli
from PIL import Image
from small_models import TINY

from efficientdet_tf.cli import infer
from efficientdet_tf.config import get_config
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.model.builder import build_model
from efficientdet_tf.model.checkpoint import save_weights

TINY_FLAGS = ("--model_name=efficientdet-d0", f"--hparams={TINY}")
NUM_IMAGES = 4


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """images/*.png with labelImg annotations/*.xml, the same boxes as boxes.csv and coco.json."""
    root = tmp_path_factory.mktemp("labelled")
    shapes = SyntheticShapes(NUM_IMAGES, (48, 64), seed=3)
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    rows, images, objects = ["filename,width,height,class,xmin,ymin,xmax,ymax"], [], []
    for index in range(NUM_IMAGES):
        truth = shapes.annotations(index)
        Image.fromarray(shapes.render(index)).save(root / "images" / truth.file_name)
        boxes = list(zip(truth.boxes.tolist(), truth.classes.tolist()))
        (root / "annotations" / f"{Path(truth.file_name).stem}.xml").write_text(
            f"<annotation><filename>{truth.file_name}</filename><size><width>{truth.width}"
            f"</width><height>{truth.height}</height><depth>3</depth></size>" + "".join(
                f"<object><name>{shapes.class_names[c]}</name><bndbox><xmin>{x0:g}</xmin>"
                f"<ymin>{y0:g}</ymin><xmax>{x1:g}</xmax><ymax>{y1:g}</ymax></bndbox></object>"
                for (y0, x0, y1, x1), c in boxes) + "</annotation>")
        rows += [f"{truth.file_name},{truth.width},{truth.height},{shapes.class_names[c]},"
                 f"{x0:g},{y0:g},{x1:g},{y1:g}" for (y0, x0, y1, x1), c in boxes]
        images.append({"id": index + 1, "file_name": truth.file_name, "width": truth.width,
                       "height": truth.height})
        objects += [{"id": len(objects) + 1, "image_id": index + 1, "category_id": c,
                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                     "iscrowd": 0} for (y0, x0, y1, x1), c in boxes]
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    categories = [{"id": i, "name": name} for i, name in shapes.class_names.items()]
    (root / "coco.json").write_text(json.dumps(
        {"images": images, "annotations": objects, "categories": categories}))
    return root


@pytest.mark.parametrize("spec, usage", [
    ("voc:{root}/annotations", "'voc:<annotations_dir>:<images_dir>[:train:<P>%|:val:<P>%]'"),
    ("csv:{root}/boxes.csv", "'csv:<file.csv>:<images_dir>[:<SET>][:train:<P>%|:val:<P>%]'"),
    ("coco:{root}/coco.json", "'coco:<annotations.json>:<image_dir>'"),
    ("voc:{root}/missing:{root}/images", "{root}/missing"),
])
def test_a_malformed_training_spec_is_a_one_line_usage_error(labelled, tmp_path, capsys, spec,
                                                            usage):
    spec = spec.format(root=labelled)
    status = run_cli("--mode=train", *TINY_FLAGS, f"--model_dir={tmp_path}",
                     f"--train_file_pattern={spec}")
    error = capsys.readouterr().err
    assert status == 2
    assert ": error: " in error and error.count("\n") == 1, error
    assert usage.format(root=labelled) in error


def test_a_malformed_validation_spec_is_a_one_line_usage_error(labelled, tmp_path, capsys):
    status = run_cli("--mode=train_and_eval", *TINY_FLAGS, f"--model_dir={tmp_path}",
                     f"--train_file_pattern=voc:{labelled}/annotations:{labelled}/images",
                     f"--val_file_pattern=csv:{labelled}/boxes.csv")
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1, error
    assert "'csv:<file.csv>:<images_dir>" in error


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = build_model(get_config("efficientdet-d0", TINY))
    return save_weights(model, tmp_path_factory.mktemp("checkpoint") / "model")


@pytest.mark.parametrize("spec, expected", [
    ("voc:{root}/annotations:{root}/images", NUM_IMAGES),
    ("csv:{root}/boxes.csv:{root}/images", NUM_IMAGES),
    ("coco:{root}/coco.json:{root}/images", NUM_IMAGES),
    ("synthetic:val:3", 3),
])
def test_infer_reads_the_images_of_a_dataset_spec(labelled, spec, expected):
    images = infer._input_images(spec.format(root=labelled), get_config("efficientdet-d0", TINY))
    assert len(images) == expected
    for label, read in images:
        assert read().ndim == 3
        if not spec.startswith("synthetic"):
            assert Path(label).parent == labelled / "images"


@pytest.mark.slow  # folding batch norm and tracing the detector: about a minute on 2 cores
def test_infer_draws_the_held_out_images_of_a_voc_folder(labelled, checkpoint, tmp_path,
                                                          capsys):
    status = run_cli("--mode=infer", *TINY_FLAGS, f"--ckpt={checkpoint}",
                     f"--input_image=voc:{labelled}/annotations:{labelled}/images:val:50%",
                     f"--output_image_dir={tmp_path}")
    assert status == 0, capsys.readouterr().err
    detections = json.loads((tmp_path / "detections_by_image.json").read_text())
    assert len(detections) == NUM_IMAGES // 2
    for path in detections:
        assert Path(path).parent == labelled / "images"
        with Image.open(tmp_path / Path(path).name) as drawn, Image.open(path) as original:
            assert drawn.size == original.size


def test_infer_names_a_malformed_dataset_spec(checkpoint, tmp_path, capsys):
    status = run_cli("--mode=infer", *TINY_FLAGS, f"--ckpt={checkpoint}",
                     "--input_image=coco:only.json", f"--output_image_dir={tmp_path}")
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1, error
    assert "'coco:<annotations.json>:<image_dir>'" in error
