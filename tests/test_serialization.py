"""Keras serialization: the network saves as `.keras` and loads back with the same outputs."""

import inspect
import warnings

import keras
import numpy as np
import pytest
from small_models import TINY

from efficientdet_tf import build_model, get_config

VARIANTS = ["", "fpn_name=qufpn", "grad_checkpoint=true"]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda overrides: overrides or "default")
def tiny_model(request):
    """One model per variant, for both tests of it (they save and read it, change nothing)."""
    overrides = request.param
    keras.backend.clear_session()
    config = get_config("efficientdet-d0", TINY + ("," + overrides if overrides else ""))
    return build_model(config)


def outputs(model):
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    class_outputs, box_outputs = model(images, training=False)
    return [np.asarray(o) for o in class_outputs + box_outputs]


def custom_layers(model):
    """The layers of `model`, nested ones included, whose class is defined in efficientdet_tf."""
    return [
        layer for layer in model._flatten_layers(include_self=False, recursive=True)
        if type(layer).__module__.startswith("efficientdet_tf.")
    ]


def constructor_arguments(cls):
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD}


def test_keras_file_round_trip_keeps_outputs_and_variable_paths(tmp_path, tiny_model):
    model = tiny_model
    expected = outputs(model)
    model.save(tmp_path / "m.keras")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Keras's "build() was called ... unbuilt state"
        loaded = keras.saving.load_model(tmp_path / "m.keras")

    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    for got, want in zip(outputs(loaded), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_every_custom_layer_round_trips_its_config(tiny_model):
    layers = custom_layers(tiny_model)
    assert {type(layer).__name__ for layer in layers} >= {
        "EfficientNet", "Stem", "MBConvBlock", "SqueezeExcite", "ResampleFeatureMap",
        "FeatureNetwork", "FpnCell", "FusionNode", "ConvNorm", "PredictionHead",
    }
    for layer in layers:
        cls = type(layer)
        assert cls.get_config is not keras.layers.Layer.get_config, cls.__name__
        assert keras.saving.get_registered_object(f"efficientdet_tf>{cls.__name__}") is cls
        config = layer.get_config()
        assert constructor_arguments(cls) <= set(config), cls.__name__
        rebuilt = cls.from_config(config)
        assert type(rebuilt) is cls
        assert rebuilt.get_config() == config, cls.__name__


def test_classifier_head_round_trips_its_config():
    from efficientdet_tf.model.efficientnet import build_classifier

    keras.backend.clear_session()
    backbone = build_classifier("efficientnet-lite0", image_size=32, num_classes=5).layers[-1]
    head = backbone.head
    rebuilt = type(head).from_config(head.get_config())
    assert constructor_arguments(type(head)) <= set(head.get_config())
    assert rebuilt.get_config() == head.get_config()
    assert (rebuilt.num_classes, rebuilt.act_type) == (5, "relu6")
    assert type(backbone).from_config(backbone.get_config()).get_config() == backbone.get_config()
