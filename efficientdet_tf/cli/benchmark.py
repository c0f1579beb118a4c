"""`--mode=benchmark`: latency (batch 1) and throughput (batch --batch_size), TF and TFLite paths.

Both paths are timed for the network alone (on a pre-processed input) and end to end (uint8 image
in, detections in original pixels out), interleaved round-robin, medians after warm-up. TF runs the
BN-folded inference functions; TFLite runs float32 files converted here, with LiteRT, one image per
call (a TFLite file has batch 1), so its batch figure is --benchmark_batch_size calls in a row.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import flags

from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import usage_errors
from efficientdet_tf.cli.timing import interleaved_medians
from efficientdet_tf.data.formats.images import read_rgb_image
from efficientdet_tf.data.preprocess import preprocess_image
from efficientdet_tf.export.tflite import convert, export_tflite, tflite_network_function
from efficientdet_tf.inference.detector import Detector
from efficientdet_tf.inference.fold_batch_norm import FoldedFunction
from efficientdet_tf.inference.tflite_detector import TfliteDetector

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SHAPE = (480, 640, 3)

flags.DEFINE_integer("benchmark_runs", 20, "Timed runs of each function, after 3 warm-up runs.")
flags.DEFINE_integer("benchmark_batch_size", 8, "Batch of the throughput figures.")
flags.DEFINE_string("benchmark_image", None,
                    "Image to run on; default: random pixels of 480x640.")


def run(flag_values) -> None:
    config = config_from_flags(flag_values)
    batch_size = flag_values.benchmark_batch_size
    with usage_errors():
        detector = _detector(config, flag_values)
        image = (read_rgb_image(flag_values.benchmark_image) if flag_values.benchmark_image
                 else np.random.default_rng(0).integers(0, 256, DEFAULT_IMAGE_SHAPE, np.uint8))
        with tempfile.TemporaryDirectory() as directory:
            functions = _timed_functions(detector, config, image, batch_size, Path(directory))
            medians = interleaved_medians(functions, runs=flag_values.benchmark_runs)
    print(f"{config.name} at {config.image_size[0]}x{config.image_size[1]}, image "
          f"{image.shape[0]}x{image.shape[1]}, medians of {flag_values.benchmark_runs} runs")
    print(f"{'path':8s} {'part':12s} {'batch 1 ms':>11s} {f'batch {batch_size} img/s':>16s}")
    for path in ("tf", "tflite"):
        for part in ("network", "end-to-end"):
            latency = medians[(path, part, 1)]
            throughput = batch_size / medians[(path, part, batch_size)]
            print(f"{path:8s} {part:12s} {latency * 1e3:11.1f} {throughput:16.1f}")


def _detector(config, flag_values) -> Detector:
    if flag_values.ckpt:
        return Detector.from_checkpoint(config, flag_values.ckpt, flag_values.postprocess_mode)
    log.warning("No --ckpt: timing randomly initialized weights.")
    return Detector(config, mode=flag_values.postprocess_mode)


def _timed_functions(detector: Detector, config, image, batch_size: int, directory: Path):
    """{(path, part, batch): function of no argument}."""
    network_input = preprocess_image(image, config)[0][tf.newaxis]
    images = {n: tf.constant(np.repeat(image[np.newaxis], n, axis=0)) for n in (1, batch_size)}
    inputs = {n: tf.repeat(network_input, n, axis=0) for n in (1, batch_size)}
    network = FoldedFunction(
        tf.function(lambda x: detector.network(x, training=False)).get_concrete_function(
            tf.TensorSpec([None, *config.image_size, 3], tf.float32)))
    end_to_end = detector.inference_function()
    tflite_detector = TfliteDetector(
        export_tflite(detector.network, config, directory / "detector.tflite", metadata=False),
        config)
    network_file = directory / "network.tflite"
    network_file.write_bytes(convert(
        tflite_network_function(detector.network, config, "normalized"), detector.network))
    tflite_network = TfliteDetector(network_file, config)
    functions = {}
    for n in (1, batch_size):
        functions[("tf", "network", n)] = lambda n=n: network(inputs[n])
        functions[("tf", "end-to-end", n)] = lambda n=n: end_to_end(images[n])
        functions[("tflite", "network", n)] = lambda n=n: [
            tflite_network.run(network_input.numpy()) for _ in range(n)]
        functions[("tflite", "end-to-end", n)] = lambda n=n: [
            tflite_detector.detect_one(image) for _ in range(n)]
    return functions

