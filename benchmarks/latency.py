"""D0 end-to-end latency: TF, TFLite, ONNX Runtime and OpenVINO, against an EfficientNet-B0
yardstick.

    python benchmarks/latency.py
    python benchmarks/latency.py --ckpt=efficientdet-d0/ --max_nms_inputs=5000
    python benchmarks/latency.py --model=runs/demo512b/config.yaml --ckpt=runs/demo512b \
        --image=synthetic --calibration_data=synthetic:train:32 --calibration_images=32

Batch 1, one uint8 image in (480x640 uniform noise by default: with random weights, every anchor
scores alike, NMS's worst case; a trained model sees an image of its data, --image), detections
in original pixels out:
  tf        the Detector's inference function: BN folded into the convolutions (see
            efficientdet_tf/inference/fold_batch_norm.py), pre- and post-processing inside;
  tflite    a float32 TFLite export run by LiteRT, pre-processing (TF) and box scaling included
            (tflite_int8: the int8 export);
  onnx      the ONNX export (hard NMS inside) run by ONNX Runtime (onnx_int8: the int8 export);
  openvino  the OpenVINO IR run by OpenVINO at float32 (openvino_bf16: at bf16, OpenVINO's
            default on CPUs with AMX; the same as float32 elsewhere; openvino_int8: the int8
            export, NNCF's);
  yardstick keras.applications.EfficientNetB0(include_top=False, weights=None) at 512x512, the
            network alone.
Each path runs with the official hparams and with a pre-NMS top-k (nms_configs.max_nms_inputs).
All functions are timed round-robin, medians after warm-up.
The int8 files calibrate on --calibration_images images of --calibration_data.
Targets: tf <= 1.0x, tflite <= 0.8x, the ONNX Runtime and OpenVINO paths <= 0.6x the yardstick,
the int8 files <= 0.35x.
The onnx and openvino paths need the deploy extra (pip install -e ".[deploy]").
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from efficientdet_tf.cli.timing import interleaved_medians
from efficientdet_tf.config import get_config
from efficientdet_tf.data.formats.images import read_rgb_image
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.export.calibration import calibration_pixels
from efficientdet_tf.export.onnx import export_onnx
from efficientdet_tf.export.openvino import export_openvino
from efficientdet_tf.export.tflite import export_tflite
from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.inference.runtime_detector import open_onnx, open_openvino
from efficientdet_tf.inference.tflite_detector import TfliteDetector
from efficientdet_tf.model.builder import build_model
from efficientdet_tf.model.checkpoint import load_weights

TARGETS = {"tf": 1.0, "tflite": 0.8, "tflite_int8": 0.35, "onnx": 0.6, "onnx_int8": 0.35,
           "openvino": 0.6, "openvino_bf16": 0.6, "openvino_int8": 0.35}
IMAGE_SHAPE = (480, 640, 3)
YARDSTICK_SIZE = 512


def benchmark_image(spec: str | None) -> np.ndarray:
    """Uniform noise of IMAGE_SHAPE (None), a synthetic shapes image of that size ('synthetic'),
    or an image file."""
    if spec is None:
        return np.random.default_rng(0).integers(0, 256, IMAGE_SHAPE, dtype=np.uint8)
    if spec == "synthetic":
        return SyntheticShapes.split("val", IMAGE_SHAPE[:2], 1).render(0)
    return read_rgb_image(spec)


def yardstick():
    network = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(YARDSTICK_SIZE, YARDSTICK_SIZE, 3))
    inputs = tf.random.uniform([1, YARDSTICK_SIZE, YARDSTICK_SIZE, 3])
    function = tf.function(lambda images: network(images, training=False))
    return lambda: function(inputs)


def detection_functions(model, config, image: np.ndarray, directory: Path,
                        calibration_data: str, calibration_images: int):
    """{path: function of no argument} for every path of one config."""
    tf_detect = Detector(config, model).inference_function()
    images = tf.constant(image[np.newaxis])
    tflite, tflite_int8 = (TfliteDetector(export_tflite(
        model, config, directory / f"{quantization}.tflite", quantization,
        dataset=calibration_data, num_calibration_images=calibration_images, metadata=False),
        config) for quantization in ("float32", "int8"))
    onnx = open_onnx(export_onnx(model, config, directory / "model.onnx"), config)
    calibration = calibration_pixels(calibration_data, config, calibration_images)
    onnx_int8 = open_onnx(export_onnx(
        model, config, directory / "model_int8.onnx", calibration=calibration), config)
    openvino_ir = export_openvino(model, config, directory / "openvino" / "model.xml")
    openvino = {precision: open_openvino(openvino_ir, config, precision)
                for precision in ("f32", "bf16")}
    openvino_int8 = open_openvino(export_openvino(
        model, config, directory / "openvino_int8" / "model.xml", calibration=calibration), config)
    return {
        "tf": lambda: tf_detect(images),
        "tflite": lambda: tflite.detect_one(image),
        "tflite_int8": lambda: tflite_int8.detect_one(image),
        "onnx": lambda: onnx(image[np.newaxis]),
        "onnx_int8": lambda: onnx_int8(image[np.newaxis]),
        "openvino": lambda: openvino["f32"](image[np.newaxis]),
        "openvino_bf16": lambda: openvino["bf16"](image[np.newaxis]),
        "openvino_int8": lambda: openvino_int8(image[np.newaxis]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientdet-d0")
    parser.add_argument("--ckpt", default=None, help="weights (default: random initialization)")
    parser.add_argument("--max_nms_inputs", type=int, default=1000,
                        help="pre-NMS top-k of the second configuration")
    parser.add_argument("--image", default=None,
                        help="'synthetic', an image file, or none: uniform noise")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--calibration_data", default="synthetic:val:32",
                        help="int8 calibration images (a dataset spec)")
    parser.add_argument("--calibration_images", type=int, default=32)
    args = parser.parse_args()

    settings = {"official": None, f"max_nms_inputs={args.max_nms_inputs}":
                {"nms_configs.max_nms_inputs": args.max_nms_inputs}}
    model = build_model(get_config(args.model))
    if args.ckpt:
        load_weights(model, args.ckpt)
    image = benchmark_image(args.image)
    functions = {"yardstick": yardstick()}
    with tempfile.TemporaryDirectory() as directory:
        for setting, overrides in settings.items():
            config = get_config(args.model, overrides)
            (Path(directory) / setting).mkdir()
            for path, function in detection_functions(
                    model, config, image, Path(directory) / setting, args.calibration_data,
                    args.calibration_images).items():
                functions[(path, setting)] = function
        medians = interleaved_medians(functions, runs=args.runs)

    base = medians.pop("yardstick")
    print(f"{args.model} ({args.ckpt or 'random weights'}) end to end, batch 1, "
          f"{image.shape[0]}x{image.shape[1]} uint8 image ({args.image or 'noise'}); "
          f"medians of {args.runs} interleaved runs")
    print(f"  yardstick EfficientNetB0 {YARDSTICK_SIZE}x{YARDSTICK_SIZE}  {base * 1e3:7.1f} ms")
    for (path, setting), seconds in medians.items():
        ratio, target = seconds / base, TARGETS[path]
        verdict = "meets" if ratio <= target else "misses"
        print(f"  {path:13s} {setting:22s} {seconds * 1e3:7.1f} ms  {ratio:.2f}x  "
              f"({verdict} <= {target}x)")


if __name__ == "__main__":
    main()
