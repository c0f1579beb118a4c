"""EfficientDet (Tan, Pang & Le, CVPR 2020) for TensorFlow 2 / Keras 3.

    import efficientdet_tf as edet
    detector = edet.ObjectDetector.from_pretrained("efficientdet-lite0", num_classes=3)
    detector.fit("voc:annotations:images", epochs=20, batch_size=16)  # see `object_detector`

or, the network alone:

    config = edet.get_config("efficientdet-d0", "num_classes=3")
    model = edet.build_model(config)
    edet.load_weights(model, "efficientdet-d0", skip_mismatch=True)  # official weights by name
    class_outputs, box_outputs = model(images, training=False)

The names below load on first use, so that `import efficientdet_tf` does not load TensorFlow
(the command line loads it in its own way, see `cli.main`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "CheckpointMismatchError": "efficientdet_tf.model.checkpoint",
    "Config": "efficientdet_tf.config",
    "ConfigError": "efficientdet_tf.config",
    "ObjectDetector": "efficientdet_tf.object_detector",
    "available_models": "efficientdet_tf.config",
    "build_model": "efficientdet_tf.model.builder",
    "get_config": "efficientdet_tf.config",
    "load_weights": "efficientdet_tf.model.checkpoint",
    "open_detector": "efficientdet_tf.inference.loading",
    "save_weights": "efficientdet_tf.model.checkpoint",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from efficientdet_tf.config import Config, ConfigError, available_models, get_config
    from efficientdet_tf.inference.loading import open_detector
    from efficientdet_tf.model.builder import build_model
    from efficientdet_tf.model.checkpoint import CheckpointMismatchError, load_weights, save_weights
    from efficientdet_tf.object_detector import ObjectDetector


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'efficientdet_tf' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    """The lazy names too, so that `dir()` and completion find them before first use."""
    return sorted({*globals(), *_EXPORTS})
