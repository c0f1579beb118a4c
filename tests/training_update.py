"""The update one training step of the official recipe makes, from the official fixture's
checkpoint on a batch of coco128 images, for tests/test_training_off_tensorflow.py to compare
across Keras backends. `backend_reference.py` computes it on TensorFlow, whose step is the
official one (tests/test_training.py).

No augmentation, and D0 has no stochastic depth: the step draws no random numbers, so two
backends see the same pixels and run the same arithmetic.

The fixture's random weights make the step sensitive to float32 rounding, which grows with the
maps: the batch norms' statistics and the other sums over all pixels. XLA (JAX) and PyTorch sum
them accurately, but TensorFlow's CPU kernels lose digits over the 131072 values per channel of
512 px (the variance of the stem's batch norm is 4e-4 off), so at 512 px TensorFlow's float32
update is 5.3e-2 away from the same step in float64, while JAX's and PyTorch's are 1.7e-4 away.
The comparison therefore takes TensorFlow's step in float64 (`--float64`) as the reference: the
recipe's arithmetic without the rounding.
"""

from pathlib import Path

import keras
import numpy as np
from official_fixture import FIXTURE_DIR, FIXTURE_MODEL, SHARED_DIR
from small_models import NO_AUGMENTATION

from efficientdet_tf.object_detector import ObjectDetector

COCO128 = SHARED_DIR / "datasets" / "coco128"
# The fixture's 90 COCO classes, batch 2, at D0's 512 px or a small size (the weights fit any).
FULL_SIZE, SMALL_SIZE = 512, 64
UPDATE_DATA = f"coco:{COCO128 / 'annotations' / 'instances.json'}:{COCO128 / 'images'}"


class FirstStep(keras.callbacks.Callback):
    """The trained weights when training starts and after the first step."""

    def _trained(self) -> dict[str, np.ndarray]:
        return {v.path: keras.ops.convert_to_numpy(v) for v in self.model.training_step.trainable}

    def on_train_begin(self, logs=None):
        self.before = self._trained()

    def on_train_batch_end(self, batch, logs=None):
        self.after = self._trained()


def training_update(image_size: int, run_eagerly: bool = False) -> dict[str, np.ndarray]:
    """{variable path: change of the weight} after one step of batch 2 at `image_size`, in
    Keras's global dtype policy."""
    keras.utils.set_random_seed(0)
    detector = ObjectDetector(FIXTURE_MODEL, f"image_size={image_size},{NO_AUGMENTATION}")
    detector.start_training_from(FIXTURE_DIR / "ckpt")
    detector.compile(run_eagerly=run_eagerly)
    first_step = FirstStep()
    detector.fit(UPDATE_DATA, epochs=1, batch_size=2, steps_per_epoch=1, seed=0,
                 callbacks=[first_step], verbose=0)
    return {path: first_step.after[path] - first_step.before[path] for path in first_step.before}


def relative_difference(update: dict, reference: dict) -> float:
    """|update - reference| / |reference| over all weights together."""
    paths = sorted(reference)
    assert sorted(update) == paths
    difference = np.sqrt(sum(np.sum((update[p] - reference[p]) ** 2) for p in paths))
    return float(difference / np.sqrt(sum(np.sum(reference[p] ** 2) for p in paths)))


def main(argv: list[str]) -> None:
    """`training_update.py OUT.npz IMAGE_SIZE [--float64]`: the update on KERAS_BACKEND's
    backend, saved as NumPy arrays."""
    if "--float64" in argv[3:]:
        keras.config.set_dtype_policy("float64")
    np.savez(Path(argv[1]), **training_update(int(argv[2])))


if __name__ == "__main__":
    import sys

    main(sys.argv)
