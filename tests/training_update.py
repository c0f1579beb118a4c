"""The update one training step of the official recipe makes, from the official fixture's
checkpoint on a batch of coco128 images, for tests/test_training_off_tensorflow.py to compare
across Keras backends. `backend_reference.py` computes it on TensorFlow, whose step is the
official one (tests/test_training.py).

No augmentation, and D0 has no stochastic depth: the step draws no random numbers, so two
backends see the same pixels and run the same arithmetic.
"""

from pathlib import Path

import keras
import numpy as np
from official_fixture import FIXTURE_DIR, FIXTURE_MODEL, SHARED_DIR
from small_models import NO_AUGMENTATION

from efficientdet_tf.object_detector import ObjectDetector

COCO128 = SHARED_DIR / "datasets" / "coco128"
# The fixture's 90 COCO classes at 64 px, batch 2 (the weights fit any size). Its random weights
# make the step sensitive to float32 rounding, which grows with the maps: at 128 px TensorFlow's
# own rounding of the batch-norm statistics moves the update by 7e-4 (float64 statistics against
# float32), and the backends differ by 1.1e-3; at 64 px by 1.3e-4.
UPDATE_HPARAMS = f"image_size=64,{NO_AUGMENTATION}"
UPDATE_DATA = f"coco:{COCO128 / 'annotations' / 'instances.json'}:{COCO128 / 'images'}"


class FirstStep(keras.callbacks.Callback):
    """The trained weights when training starts and after the first step."""

    def _trained(self) -> dict[str, np.ndarray]:
        return {v.path: keras.ops.convert_to_numpy(v) for v in self.model.training_step.trainable}

    def on_train_begin(self, logs=None):
        self.before = self._trained()

    def on_train_batch_end(self, batch, logs=None):
        self.after = self._trained()


def training_update(run_eagerly: bool = False) -> dict[str, np.ndarray]:
    """{variable path: change of the weight} after one step of batch 2."""
    keras.utils.set_random_seed(0)
    detector = ObjectDetector(FIXTURE_MODEL, UPDATE_HPARAMS)
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


if __name__ == "__main__":  # the figure of the closing note, on KERAS_BACKEND's backend
    import sys

    np.savez(Path(sys.argv[1]), **training_update())
