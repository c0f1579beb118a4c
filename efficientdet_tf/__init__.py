"""EfficientDet (Tan, Pang & Le, CVPR 2020) for TensorFlow 2 / Keras 3.

    import efficientdet_tf as edet
    config = edet.get_config("efficientdet-d0", "num_classes=3")
    model = edet.build_model(config)
    edet.load_weights(model, "efficientdet-d0/", skip_mismatch=True)  # official checkpoint
    class_outputs, box_outputs = model(images, training=False)
"""

from efficientdet_tf.config import Config, ConfigError, available_models, get_config
from efficientdet_tf.model.builder import build_model
from efficientdet_tf.model.checkpoint import CheckpointMismatchError, load_weights, save_weights

__all__ = [
    "CheckpointMismatchError",
    "Config",
    "ConfigError",
    "available_models",
    "build_model",
    "get_config",
    "load_weights",
    "save_weights",
]
