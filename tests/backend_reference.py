"""What a small detector gives under one Keras backend, for tests/test_backends.py to compare
under another: `KERAS_BACKEND=jax python tests/backend_reference.py OUT_DIR`.

Writes OUT_DIR/weights (an official-layout checkpoint), OUT_DIR/model.keras, on TensorFlow
OUT_DIR/training/ckpt (a checkpoint as the trainer writes them), the raw outputs
of `reference_inputs()` (outputs.npz), the detections of `reference_images()` (detections.npz)
and the metrics of `evaluate` (metrics.json). Hard NMS: soft-NMS among the near-equal scores of
random weights turns last-bit differences into other choices (tests/test_end_to_end.py). The
small detector with the five-block backbone: what is compared is the same weights' arithmetic,
and each JAX compilation (raw outputs, detections, evaluation) costs less for a smaller program.
"""

import json
import sys
from pathlib import Path

import keras
import numpy as np
from small_models import FIVE_BLOCK_BACKBONE, SMALL

import efficientdet_tf as edet
from efficientdet_tf.config.parsing import parse_overrides

# A dict (nested, as `parse_overrides` gives): the backbone's blocks are a list of strings.
HPARAMS = {**parse_overrides(f"{SMALL},nms_configs.method=hard"), **FIVE_BLOCK_BACKBONE}
# Two images, in one batch as `reference_images()`: one compiled detector serves both (JAX).
EVAL_DATA, EVAL_SAMPLES = "synthetic:val", 2


def reference_images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 96, 160, 3), np.uint8)


def reference_inputs() -> np.ndarray:
    """Normalized network inputs."""
    return np.random.default_rng(1).normal(size=(2, 128, 128, 3)).astype(np.float32)


def raw_outputs(network) -> dict[str, np.ndarray]:
    class_outputs, box_outputs = network.predict(reference_inputs(), verbose=0)  # compiled
    return {f"{kind}_{level}": output
            for kind, outputs in (("class", class_outputs), ("box", box_outputs))
            for level, output in enumerate(outputs)}


def write_training_checkpoint(detector, prefix: Path) -> None:
    """The weights and their average as `TrainingCheckpoints` writes them."""
    from efficientdet_tf.model.checkpoint import TrainingState

    TrainingState(detector.network.weights, detector.weight_average).checkpoint.write(str(prefix))


def main(out_dir: Path) -> None:
    keras.utils.set_random_seed(0)
    detector = edet.ObjectDetector("efficientdet-d0", HPARAMS)
    edet.save_weights(detector.network, out_dir / "weights")
    detector.save(out_dir / "model.keras")
    np.savez(out_dir / "outputs.npz", **raw_outputs(detector.network))
    if keras.backend.backend() == "tensorflow":
        write_training_checkpoint(detector, out_dir / "training" / "ckpt")
    np.savez(out_dir / "detections.npz", **detector.predict(reference_images()))
    metrics = detector.evaluate(EVAL_DATA, batch_size=EVAL_SAMPLES, eval_samples=EVAL_SAMPLES)
    (out_dir / "metrics.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
