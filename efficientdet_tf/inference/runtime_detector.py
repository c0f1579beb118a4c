"""Running exported ONNX files (ONNX Runtime) and OpenVINO IRs (OpenVINO) like a `Detector`.

Both files have the SavedModel's serving interface (`export.onnx`, `export.openvino`): uint8
images [batch, height, width, 3] in, pre-processing, network and NMS inside, the serving
signature's outputs out. `RuntimeDetector` runs either through one function from images to named
NumPy outputs. For evaluation (`detect_preprocessed`) it feeds the pre-processed images back as
pixels at the network input size (`to_pixels`, as TFLite files that take pixels get them): the
graph then resizes nothing, and the boxes are scaled back to the original images here.
The exporters record in the file the network input size, heads and NMS (`file_metadata`); the
runner checks them against the config it is given.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from efficientdet_tf.data.preprocess import to_pixels
from efficientdet_tf.inference.detector import OUTPUT_NAMES
from efficientdet_tf.inference.segmentation_masks import SEGMENTATION_MASKS

log = logging.getLogger(__name__)

# The outputs of files exported without NMS (--onnx_nms=false): decoded boxes, class scores.
PRE_NMS_OUTPUTS = ("boxes", "scores")
DEPLOY_INSTALL = 'pip install -e ".[deploy]"'
_PACKAGES = {"onnxruntime": "onnxruntime", "onnxruntime.quantization": "onnxruntime",
             "openvino": "openvino", "tf2onnx": "tf2onnx", "nncf": "nncf"}
# What OpenVINO IRs run at on the CPU (INFERENCE_PRECISION_HINT); the other runtimes, float32.
INFERENCE_PRECISIONS = ("f32", "bf16")
# Keys of the metadata the exporters write into the files.
IMAGE_SIZE_KEY = "efficientdet_tf.image_size"
HEADS_KEY = "efficientdet_tf.heads"
NMS_KEY = "efficientdet_tf.nms"


class MissingRuntimeError(ImportError):
    """A runtime or converter of the `deploy` extra is not installed."""


def require_module(module: str, purpose: str):
    """`module` imported, or a MissingRuntimeError that names the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingRuntimeError(
            f"{module} is needed to {purpose} but it is not installed ({error}): "
            f"{DEPLOY_INSTALL} (or pip install {_PACKAGES[module]})."
        ) from None


def file_metadata(config, nms: str | None) -> dict[str, str]:
    """What an exported file records about itself: network input size, heads, NMS method (None:
    no NMS, the pre-NMS outputs)."""
    height, width = config.image_size
    return {IMAGE_SIZE_KEY: f"{height}x{width}", HEADS_KEY: ",".join(config.heads),
            NMS_KEY: nms or "none"}


class RuntimeDetector:
    """An exported file run by `run` (uint8 images [batch, H, W, 3] -> named NumPy outputs),
    called like `Detector`.

    Args:
      run: the runtime's call of the file.
      metadata: the file's `file_metadata`.
      config: the config the file was exported with (image size, heads, normalization).
      description: the file, for error messages.
    """

    def __init__(self, run: Callable[[np.ndarray], dict], metadata: dict[str, str], config,
                 description: str):
        self.config = config
        self.metadata = metadata
        self._run = run
        self.description = description
        self._check_metadata()

    def _check_metadata(self) -> None:
        expected = file_metadata(self.config, None)
        for key, what in ((IMAGE_SIZE_KEY, "network input size"), (HEADS_KEY, "heads")):
            found = self.metadata.get(key)
            if found != expected[key]:
                raise ValueError(
                    f"{self.description} was exported with {what} {found} but the config's is "
                    f"{expected[key]}: give the --model_name / --hparams (image_size, heads) the "
                    "file was exported with.")

    @property
    def has_nms(self) -> bool:
        """False for files of the pre-NMS boxes and scores (--onnx_nms=false)."""
        return self.metadata.get(NMS_KEY) != "none"

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The file's outputs for uint8 images [batch, height, width, 3]."""
        return self._run(np.asarray(images, np.uint8))

    def __call__(self, images) -> dict[str, np.ndarray | list[np.ndarray]]:
        """uint8 images [batch, height, width, 3], or a list of [height, width, 3] (one run each)
        -> the outputs, masks at the size of the images (a list for a list of images)."""
        if not isinstance(images, (list, tuple)):
            return self._detections(self.run(images))
        per_image = [self._detections(self.run(np.asarray(image)[np.newaxis]))
                     for image in images]
        return {name: ([outputs[name][0] for outputs in per_image] if name == SEGMENTATION_MASKS
                       else np.concatenate([outputs[name] for outputs in per_image]))
                for name in per_image[0]}

    def detect_preprocessed(self, network_inputs, image_scales) -> dict[str, np.ndarray]:
        """Pre-processed images [batch, *config.image_size, 3] and their scales [batch] -> the
        outputs, boxes in original pixels, masks at the network input size."""
        outputs = self._detections(self.run(to_pixels(network_inputs, self.config).numpy()))
        boxes = OUTPUT_NAMES.boxes
        if boxes in outputs:
            scales = np.asarray(image_scales, np.float32).reshape([-1, 1, 1])
            outputs[boxes] = outputs[boxes] * scales
        return outputs

    def _detections(self, outputs: dict) -> dict:
        if not self.has_nms:
            raise ValueError(
                f"{self.description} has no NMS (exported with --onnx_nms=false): it gives the "
                f"pre-NMS {' and '.join(PRE_NMS_OUTPUTS)}, which only an NMS of your own reads. "
                "Export it with NMS to evaluate or run it here.")
        return outputs


def open_onnx(path: str | os.PathLike, config, num_threads: int | None = None) -> RuntimeDetector:
    """An ONNX file that `export.onnx` wrote, run by ONNX Runtime on the CPU."""
    onnxruntime = require_module("onnxruntime", "run ONNX files")
    path = _existing(path, "ONNX file")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or 0  # 0: ONNX Runtime's default, all cores
    # Idle worker threads sleep instead of spinning (ONNX Runtime's default): on a CPU shared with
    # other work, spinning threads take the cores from the ones with work (D0 end to end on a
    # loaded 2-core machine: 1.19x the latency yardstick spinning, 0.78x not).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]

    def run(images):
        return dict(zip(names, session.run(names, {"images": images})))

    metadata = session.get_modelmeta().custom_metadata_map
    return RuntimeDetector(run, metadata, config, f"ONNX file {str(path)!r}")


def open_openvino(path: str | os.PathLike, config, precision: str = "f32",
                  num_threads: int | None = None) -> RuntimeDetector:
    """An OpenVINO IR (.xml and .bin) that `export.openvino` wrote, run on the CPU at `precision`
    ('f32', or 'bf16' where the CPU has it: OpenVINO's default on CPUs with AMX; on a CPU without
    bf16 it runs at float32 after a warning)."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"OpenVINO precision {precision!r}: choose from {INFERENCE_PRECISIONS}.")
    openvino = require_module("openvino", "run OpenVINO IRs")
    path = _existing(path, "OpenVINO IR")
    core = openvino.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if precision == "bf16" and "BF16" not in capabilities:
        log.warning("This CPU has no bf16 (OpenVINO finds %s): %s runs at float32.",
                    ", ".join(capabilities), path)
        precision = "f32"
    model = core.read_model(str(path))
    properties = {"INFERENCE_PRECISION_HINT": precision}
    if num_threads:
        properties["INFERENCE_NUM_THREADS"] = num_threads
    compiled = core.compile_model(model, "CPU", properties)
    request = compiled.create_infer_request()

    def run(images):
        results = request.infer({"images": images})
        return {output.get_any_name(): np.asarray(value) for output, value in results.items()}

    metadata = {key: model.get_rt_info([key]).astype(str)
                for key in (IMAGE_SIZE_KEY, HEADS_KEY, NMS_KEY) if model.has_rt_info([key])}
    return RuntimeDetector(run, metadata, config, f"OpenVINO IR {str(path)!r} at {precision}")


def _existing(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")
    return path
