"""Inference pre-processing: normalize, aspect-preserving resize, zero pad."""

import numpy as np
import pytest
import tensorflow as tf
from official_fixture import FIXTURE_MODEL, expected_outputs, input_image, requires_fixture

from efficientdet_tf.config import get_config
from efficientdet_tf.data.pipeline import ExampleParser
from efficientdet_tf.data.preprocess import preprocess_image, preprocess_images, to_pixels


@requires_fixture
def test_fixture_image_is_preprocessed_like_the_official_code():
    expected = expected_outputs()
    image, image_scale = preprocess_image(input_image(), get_config(FIXTURE_MODEL))
    np.testing.assert_allclose(image.numpy(), expected["preprocessed"][0], atol=1e-4)
    np.testing.assert_allclose(image_scale.numpy(), expected["image_scale"][0], rtol=1e-6)


@requires_fixture
def test_batches_as_tensor_list_and_in_a_graph_with_unknown_sizes():
    config = get_config(FIXTURE_MODEL)
    expected = expected_outputs()
    images = input_image()[np.newaxis]
    graph_preprocess = tf.function(
        lambda batch: preprocess_images(batch, config),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
    )
    results = {
        "tensor": preprocess_images(images, config),
        "list": preprocess_images(list(images), config),
        "graph": graph_preprocess(tf.constant(images)),
    }
    for processed, scales in results.values():
        np.testing.assert_allclose(processed.numpy(), expected["preprocessed"], atol=1e-4)
        np.testing.assert_allclose(scales.numpy(), expected["image_scale"], rtol=1e-6)


def test_tall_image_fills_the_height_and_pads_the_right_with_zeros():
    config = get_config("efficientdet-d0", {"image_size": [64, 80]})
    image = np.full((100, 50, 3), 255, np.uint8)  # scale min(64/100, 80/50) = 0.64 -> 64 x 32
    processed, image_scale = preprocess_image(image, config)
    expected_value = (255 - np.array(config.mean_rgb)) / np.array(config.stddev_rgb)
    assert processed.shape == (64, 80, 3)
    np.testing.assert_allclose(
        processed[:, :32].numpy(), np.broadcast_to(expected_value, (64, 32, 3)), rtol=1e-5
    )
    np.testing.assert_array_equal(processed[:, 32:].numpy(), 0.0)
    assert image_scale.numpy() == pytest.approx(100 / 64)


def test_rejects_images_without_three_channels():
    config = get_config("efficientdet-d0")
    with pytest.raises(ValueError, match=r"\[height, width, 3\]"):
        preprocess_image(np.zeros((10, 10), np.uint8), config)
    with pytest.raises(ValueError, match=r"\[batch, height, width, 3\]"):
        preprocess_images(np.zeros((10, 10, 3), np.uint8), config)


def test_scale_range_maps_the_padded_network_input_to_minus_one_one():
    """official dataloader: `image * 2.0 / 255 - 1.0` after normalizing, resizing and padding,
    in training and evaluation; here inference too, and `to_pixels` undoes it."""
    plain = get_config("efficientdet-d0", "image_size=[64,80],mean_rgb=0*0*0,stddev_rgb=1*1*1")
    config = plain.override("scale_range=true")
    image = np.random.default_rng(0).integers(0, 256, (100, 50, 3), np.uint8)
    expected = preprocess_image(image, plain)[0].numpy() * 2 / 255 - 1
    processed = preprocess_image(image, config)[0].numpy()
    np.testing.assert_allclose(processed, expected, atol=1e-6)
    np.testing.assert_array_equal(processed[:, 32:], -1.0)  # the padding
    assert processed[:, :32].min() >= -1 and processed[:, :32].max() <= 1
    pixels = [to_pixels(preprocess_image(image, c)[0], c).numpy().astype(int)
              for c in (config, plain)]
    np.testing.assert_allclose(*pixels, atol=1)  # rounding of .5 values only

    example = {"image": tf.constant(image), "source_id": tf.constant(1, tf.int64),
               "boxes": tf.zeros([0, 4]), "classes": tf.zeros([0], tf.int32),
               "is_crowd": tf.zeros([0], tf.bool), "areas": tf.zeros([0])}
    fixed = "jitter_min=1.0,jitter_max=1.0,input_rand_hflip=false"
    for is_training in (True, False):
        parse = ExampleParser(config.override(fixed), is_training)
        np.testing.assert_allclose(parse(example)["image"].numpy(), expected, atol=1e-5)
