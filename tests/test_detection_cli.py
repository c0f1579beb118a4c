"""`main.py` modes eval, export, infer and benchmark, and their answers to bad input.

The command line runs in the test's process (`cli_in_process.run_cli`); one test runs `main.py`
in a subprocess, as a user does (its exit status and stderr).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_in_process import run_cli
from PIL import Image
from small_models import FIVE_BLOCK_BACKBONE, SMALL

from efficientdet_tf.config import get_config
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.export.saved_model import export_saved_model
from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.model.builder import build_model
from efficientdet_tf.model.checkpoint import save_weights

REPO = Path(__file__).resolve().parents[1]
# 128 px (TFLite's hard NMS keeps 100 boxes) and five backbone blocks: every mode here traces or
# converts the network, and B0's 16 blocks are not the point of any.
CONFIG = get_config("efficientdet-d0", SMALL).override(FIVE_BLOCK_BACKBONE)


def main_py(*args):
    return subprocess.run(
        [sys.executable, "main.py", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def cli(capfd, *args):
    """`efficientdet *args` in process: (exit status, stdout, stderr)."""
    capfd.readouterr()
    status = run_cli(*args)
    printed = capfd.readouterr()
    return status, printed.out, printed.err


def assert_ok(result):
    status, _, err = result
    assert status == 0, err[-3000:]


@pytest.fixture(scope="module")
def model_flag(tmp_path_factory) -> str:
    """--model_name=<CONFIG's YAML file>, as a training run's config.yaml is given."""
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    CONFIG.save(path)
    return f"--model_name={path}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_weights(build_model(CONFIG), tmp_path_factory.mktemp("checkpoint") / "model")


@pytest.fixture
def images(tmp_path):
    """A PNG and a JPEG of other sizes than the network input."""
    directory = tmp_path / "images"
    directory.mkdir()
    Image.fromarray(SyntheticShapes(1, (90, 120), seed=5).render(0)).save(directory / "a.png")
    Image.fromarray(SyntheticShapes(1, (100, 70), seed=6).render(0)).save(directory / "b.jpg")
    return directory


@pytest.mark.slow
def test_export_then_infer_with_the_tflite_file_and_with_the_checkpoint(
    model_flag, checkpoint, images, tmp_path, capfd
):
    export_dir = tmp_path / "export"
    assert_ok(cli(capfd, "--mode=export", model_flag, f"--ckpt={checkpoint}",
                      f"--saved_model_dir={export_dir}", "--tflite=float32"))
    assert (export_dir / "saved_model.pb").is_file()

    for name, weights_flag in (("tflite", f"--saved_model_dir={export_dir / 'float32.tflite'}"),
                               ("checkpoint", f"--ckpt={checkpoint}")):
        output_dir = tmp_path / name
        assert_ok(cli(capfd, "--mode=infer", model_flag, weights_flag, "--min_score_thresh=0",
                          f"--input_image={images}/*", f"--output_image_dir={output_dir}"))
        records = json.loads((output_dir / "detections_by_image.json").read_text())
        assert sorted(Path(path).name for path in records) == ["a.png", "b.jpg"], name
        for path, detections in records.items():
            height, width = np.asarray(Image.open(path)).shape[:2]
            with Image.open(output_dir / Path(path).name) as drawn:
                assert drawn.size == (width, height)
            assert len(detections) == 100, name  # random weights: every row scores above 0
            # Boxes are clipped to the network input (official), which covers the longer side.
            boxes = np.array([d["box_yxyx"] for d in detections])
            assert boxes.min() >= 0 and boxes.max() <= max(height, width) + 1e-3
            assert {d["class_name"] for d in detections} <= {"class 1", "class 2", "class 3"}


@pytest.mark.slow  # a new process, importing TensorFlow
def test_infer_goes_on_past_an_unreadable_file_and_says_so(
    model_flag, checkpoint, images, tmp_path
):
    """The subprocess smoke test of `main.py`: exit status 1, the reason on stderr."""
    (images / "c_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    output_dir = tmp_path / "out"
    result = main_py("--mode=infer", model_flag, f"--ckpt={checkpoint}",
                     f"--input_image={images}/*", f"--output_image_dir={output_dir}")
    assert result.returncode == 1
    records = json.loads((output_dir / "detections_by_image.json").read_text())
    assert sorted(Path(path).name for path in records) == ["a.png", "b.jpg"]
    assert sorted(path.name for path in output_dir.glob("*.*g")) == ["a.png", "b.jpg"]
    assert f"{images}/c_corrupt.jpg: skipped" in result.stderr
    assert "1 of 3 images could not be read and were skipped (1 unreadable image (corrupt or " \
        "truncated))" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("model", ["checkpoint", "saved_model"])
def test_eval_mode_prints_coco_metrics_and_writes_results(
    model_flag, checkpoint, tmp_path, model, capfd
):
    if model == "checkpoint":
        weights_flag = f"--ckpt={checkpoint}"
    else:
        detector = Detector.from_checkpoint(CONFIG, checkpoint)
        weights_flag = f"--saved_model_dir={export_saved_model(detector, tmp_path / 'exported')}"
    result = cli(capfd, "--mode=eval", model_flag, weights_flag,
                 "--val_file_pattern=synthetic:val:6", "--batch_size=4", "--eval_samples=5",
                 f"--eval_dir={tmp_path}")
    assert_ok(result)
    printed = dict(line.split() for line in result[1].splitlines() if line.startswith("A"))
    assert {"AP", "AP50", "ARmax100", "AP_/circle"} <= set(printed)
    detections = json.loads((tmp_path / "detections.json").read_text())
    assert {d["image_id"] for d in detections} == {1, 2, 3, 4, 5}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("--mode=infer", "--input_image=/nonexistent/*.jpg", "--output_image_dir=/tmp/x",
          "--ckpt=/tmp/x"), "No files match --input_image='/nonexistent/*.jpg'"),
        (("--mode=infer", "--input_image={images}/a.png", "--output_image_dir={tmp}/o",
          "--saved_model_dir={tmp}/none.tflite"), "TFLite file '{tmp}/none.tflite' does not exist"),
        (("--mode=infer", "--input_image={images}/a.png", "--output_image_dir={tmp}/o",
          "--ckpt={checkpoint}", "--hparams=image_size=128"), "does not fit model"),
        (("--mode=infer", "{model}", "--input_image={images}/bad.jpg",
          "--output_image_dir={tmp}/o", "--ckpt={checkpoint}"),
         "{images}/bad.jpg: skipped, {images}/bad.jpg: unreadable image (corrupt or truncated)\n"),
        (("--mode=export", "--ckpt={checkpoint}"), "needs --saved_model_dir"),
        (("--mode=eval", "--val_file_pattern=synthetic:val:2", "--ckpt={checkpoint}",
          "--saved_model_dir={tmp}"), "needs exactly one of --ckpt"),
        (("--mode=eval", "{model}", "--val_file_pattern=synthetic:val:2",
          "--saved_model_dir={tmp}"), "'{tmp}' is neither an exported file"),
    ],
)
def test_bad_input_is_named_with_the_fix(
    model_flag, checkpoint, images, tmp_path, arguments, message, capfd
):
    (images / "bad.jpg").write_text("not an image")
    values = {"images": images, "tmp": tmp_path, "checkpoint": checkpoint, "model": model_flag}
    status, _, err = cli(capfd, *(argument.format(**values) for argument in arguments))
    assert status != 0
    assert message.format(**values) in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_benchmark_mode_prints_both_paths(model_flag, checkpoint, capfd):
    result = cli(capfd, "--mode=benchmark", model_flag, f"--ckpt={checkpoint}",
                 "--benchmark_runs=2", "--benchmark_batch_size=2")
    assert_ok(result)
    rows = [line.split() for line in result[1].splitlines()
            if line.startswith(("tf ", "tflite "))]
    assert [row[:2] for row in rows] == [["tf", "network"], ["tf", "end-to-end"],
                                         ["tflite", "network"], ["tflite", "end-to-end"]]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)
