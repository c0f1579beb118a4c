"""One exported set of files, made once per test run and shared by the tests that only read them.

The model: `small_models.SMALL` (128 px) with both heads (detection and a 4-class segmentation)
and the five-block backbone (`small_models.FIVE_BLOCK_BACKBONE`: B0's 16 blocks make every
exporter slower, and no test of these files is about them), random weights given spread scores
(`small_models.spread_scores`). Its files: the checkpoint, the SavedModel, TFLite float32 /
float16 (raw pixels in, no metadata), ONNX (with its hard NMS) and the OpenVINO IR. No int8 TFLite
file: the converter leaves this two-headed model's network in float (5 int8 tensors), so
`test_export` quantizes a detection-only model itself.

Under pytest-xdist the workers share the run's base temporary folder; each file is written when a
test first asks for it, by the first process to take the lock (`fcntl.flock`); the others wait
for it and read the file. A run of a few tests writes only the files they read. Each worker
loads the network from the shared checkpoint, so that every test compares the files with the
very weights that were exported.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
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


def shared_config():
    return get_config("efficientdet-d0", SHARED).override(small_models.FIVE_BLOCK_BACKBONE)


def run_directory(tmp_path_factory) -> Path:
    """The run's base temporary folder, the same for every xdist worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def exported_files(tmp_path_factory) -> SharedFiles:
    """{name: path} of the shared files (see FILES), each written when first asked for."""
    return SharedFiles(run_directory(tmp_path_factory) / "shared_exported_files")


class SharedFiles(Mapping):
    """The shared files by name; a file is written on first access, by whichever process comes
    first (under an exclusive `fcntl.flock`), from the weights of the shared checkpoint."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._network = None

    def __iter__(self):
        return iter(FILES)

    def __len__(self):
        return len(FILES)

    def __getitem__(self, name: str) -> Path:
        path = self.directory / FILES[name]
        done = self.directory / f"{name}.done"
        if done.is_file():
            return path
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not done.is_file():
                    self._write(name, path)
                    done.touch()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return path

    def _write(self, name: str, path: Path) -> None:
        # Imported here: only a test that asks for a file pays for its exporter's imports.
        from efficientdet_tf.export.formats import export_formats  # noqa: PLC0415
        from efficientdet_tf.export.tflite import export_tflite  # noqa: PLC0415
        from efficientdet_tf.inference.detector import Detector  # noqa: PLC0415
        from efficientdet_tf.model.builder import build_model  # noqa: PLC0415
        from efficientdet_tf.model.checkpoint import save_weights  # noqa: PLC0415

        if name == "checkpoint":
            config = shared_config()
            keras.utils.set_random_seed(1)
            model = build_model(config)
            small_models.spread_scores(model, config)
            save_weights(model, path)
            return
        if self._network is None:
            self._network = shared_network(self)
        model, config = self._network
        if name.startswith("tflite_"):
            # No metadata: MediaPipe's tests (test_tflite_runtimes) write their own files.
            export_tflite(model, config, path, name.removeprefix("tflite_"), metadata=False)
            return
        directory = path if name == "saved_model" else self.directory
        written = export_formats(Detector(config, model), directory, (name,))
        assert written[name] == path, written


def shared_network(files: dict[str, Path]):
    """(network, config): the shared model, built here and loaded with the exported weights."""
    from efficientdet_tf.model.builder import build_model  # noqa: PLC0415
    from efficientdet_tf.model.checkpoint import load_weights  # noqa: PLC0415

    config = shared_config()
    model = build_model(config)
    load_weights(model, files["checkpoint"])
    return model, config
