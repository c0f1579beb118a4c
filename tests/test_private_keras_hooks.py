"""The Keras trainer hooks that `ObjectDetector` overrides, where Keras has no public equivalent.

`ObjectDetector` overrides `_maybe_symbolic_build` (private: Keras would otherwise read and
all-reduce a batch to build a symbolic copy of the model, which fails under
MultiWorkerMirroredStrategy) and wraps `make_train_function` (its logs come back as scalars). If
a Keras upgrade renames them or stops calling them from `fit`, the overrides would be silently
ignored; this test names the hook instead. setup.cfg bounds Keras to the versions tested.
"""

import inspect

import keras
import pytest
from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

from efficientdet_tf.object_detector import ObjectDetector

HOOKS = [
    ("_maybe_symbolic_build", ["iterator", "data_batch"]),
    ("make_train_function", ["force"]),
]


@pytest.mark.parametrize("name, parameters", HOOKS)
def test_the_keras_trainer_hooks_object_detector_overrides_are_still_called_by_fit(
        name, parameters):
    hook = getattr(TensorFlowTrainer, name, None)
    assert callable(hook), (
        f"Keras {keras.__version__} has no TensorFlowTrainer.{name}, which ObjectDetector "
        "overrides: find its replacement and move the override there.")
    assert list(inspect.signature(hook).parameters)[1:] == parameters, (
        f"Keras {keras.__version__} changed the signature of TensorFlowTrainer.{name}: "
        f"{inspect.signature(hook)}; update ObjectDetector.{name}.")
    assert name in inspect.getsource(TensorFlowTrainer.fit), (
        f"Keras {keras.__version__}'s fit no longer calls {name}: ObjectDetector.{name} "
        "would be ignored.")
    assert name in vars(ObjectDetector), f"ObjectDetector no longer overrides {name}."
