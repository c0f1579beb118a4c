"""D0 on the Keras backend of KERAS_BACKEND: import and build time, end-to-end latency.

    KERAS_BACKEND=jax python benchmarks/backends.py
    for b in tensorflow jax torch; do KERAS_BACKEND=$b python benchmarks/backends.py; done

Batch 1, one 480x640 uint8 image in, detections in original pixels out, through
`Detector.compiled()` (what `open_detector` runs for a checkpoint): on TensorFlow a
`tf.function`, on JAX one `jax.jit` function, on PyTorch eager. Each setting of
benchmarks/latency.py (the official hparams, and a pre-NMS top-k) is timed round-robin with the
yardstick, EfficientNet-B0 at 512x512 from `keras.applications` on the same backend, compiled by
Keras's `predict_on_batch`: the ratio is comparable between backends. Import time is that of
Keras and the package's model and inference modules; build time that of `build_model` for D0.
"""

from __future__ import annotations

import time

started = time.perf_counter()

import argparse  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from efficientdet_tf.cli.timing import interleaved_medians  # noqa: E402
from efficientdet_tf.config import get_config  # noqa: E402
from efficientdet_tf.inference.detector import Detector  # noqa: E402
from efficientdet_tf.model.builder import build_model  # noqa: E402

import_seconds = time.perf_counter() - started
IMAGE_SHAPE = (480, 640, 3)
YARDSTICK_SIZE = 512


def yardstick():
    network = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(YARDSTICK_SIZE, YARDSTICK_SIZE, 3))
    inputs = np.random.default_rng(1).uniform(size=(1, YARDSTICK_SIZE, YARDSTICK_SIZE, 3))
    inputs = inputs.astype(np.float32)
    return lambda: network.predict_on_batch(inputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientdet-d0")
    parser.add_argument("--max_nms_inputs", type=int, default=1000,
                        help="pre-NMS top-k of the second setting")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    start = time.perf_counter()
    model = build_model(get_config(args.model))
    build_seconds = time.perf_counter() - start
    image = np.random.default_rng(0).integers(0, 256, (1, *IMAGE_SHAPE), dtype=np.uint8)
    functions = {"yardstick": yardstick()}
    for setting, overrides in {"official": None, f"max_nms_inputs={args.max_nms_inputs}":
                               {"nms_configs.max_nms_inputs": args.max_nms_inputs}}.items():
        detect = Detector(get_config(args.model, overrides), model).compiled()
        functions[setting] = lambda detect=detect: detect(image)
    medians = interleaved_medians(functions, runs=args.runs)

    base = medians.pop("yardstick")
    print(f"{args.model} on {keras.backend.backend()}: import {import_seconds:.1f} s, "
          f"build {build_seconds:.1f} s")
    print(f"  end to end, batch 1, {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} uint8 image; medians of "
          f"{args.runs} interleaved runs")
    print(f"  yardstick EfficientNetB0 {YARDSTICK_SIZE}x{YARDSTICK_SIZE}  {base * 1e3:7.1f} ms")
    for setting, seconds in medians.items():
        print(f"  {setting:24s} {seconds * 1e3:7.1f} ms  {seconds / base:.2f}x")


if __name__ == "__main__":
    main()
