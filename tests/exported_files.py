"""One exported set of files, made once per test run and shared by the tests that only read them.

The model: `small_models.SMALL` (128 px) with both heads (detection and a 4-class segmentation),
random weights given spread scores (`small_models.spread_scores`). Its files: the checkpoint, the
SavedModel, TFLite float32 / float16 (raw pixels in, no metadata), ONNX (with its hard NMS) and
the OpenVINO IR. No int8 TFLite file: the converter leaves this two-headed model's network in
float (5 int8 tensors), so `test_export` quantizes a detection-only model itself.

Under pytest-xdist the workers share the run's base temporary folder; the first worker to take
the lock writes the files, the others wait for it and read them (`fcntl.flock`). Each worker
loads the network from the shared checkpoint, so that every test compares the files with the
very weights that were exported.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import keras
import small_models

from efficientdet_tf.config import get_config

SHARED = f"{small_models.SMALL},heads=[object_detection,segmentation],seg_num_classes=4"
FILES = {
    "checkpoint": "checkpoint/model",
    "saved_model": "saved_model",
    "tflite_float32": "float32.tflite",
    "tflite_float16": "float16.tflite",
    "onnx": "model.onnx",
    "openvino": "openvino/model.xml",
}
_DONE = "done.json"


def shared_config():
    return get_config("efficientdet-d0", SHARED)


def run_directory(tmp_path_factory) -> Path:
    """The run's base temporary folder, the same for every xdist worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def exported_files(tmp_path_factory) -> dict[str, Path]:
    """{name: path} of the shared files (see FILES), written by whichever process comes first."""
    root = run_directory(tmp_path_factory)
    directory = root / "shared_exported_files"
    with open(root / "shared_exported_files.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (directory / _DONE).is_file():
                _write(directory)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return {name: directory / relative for name, relative in FILES.items()}


def _write(directory: Path) -> None:
    # Imported here: only a test that asks for the files pays for the exporters' imports.
    from efficientdet_tf.export.formats import export_formats  # noqa: PLC0415
    from efficientdet_tf.export.tflite import export_tflite  # noqa: PLC0415
    from efficientdet_tf.inference.detector import Detector  # noqa: PLC0415
    from efficientdet_tf.model.builder import build_model  # noqa: PLC0415
    from efficientdet_tf.model.checkpoint import save_weights  # noqa: PLC0415

    config = shared_config()
    keras.utils.set_random_seed(1)
    model = build_model(config)
    small_models.spread_scores(model, config)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / FILES["checkpoint"])
    written = export_formats(Detector(config, model), directory / FILES["saved_model"],
                             ("saved_model",))
    for quantization in ("float32", "float16"):
        name = f"tflite_{quantization}"
        written[name] = export_tflite(model, config, directory / FILES[name], quantization,
                                      metadata=False)
    written.update(export_formats(Detector(config, model), directory, ("onnx", "openvino")))
    assert {name: str(path) for name, path in written.items()} == {
        name: str(directory / FILES[name]) for name in FILES if name != "checkpoint"}, written
    (directory / _DONE).write_text(json.dumps(sorted(written)))


def shared_network(files: dict[str, Path]):
    """(network, config): the shared model, built here and loaded with the exported weights."""
    from efficientdet_tf.model.builder import build_model  # noqa: PLC0415
    from efficientdet_tf.model.checkpoint import load_weights  # noqa: PLC0415

    config = shared_config()
    model = build_model(config)
    load_weights(model, files["checkpoint"])
    return model, config
