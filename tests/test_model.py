"""EfficientDet assembly: every feature network and fusion method builds and runs."""

import functools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from small_models import FIVE_BLOCK_BACKBONE, TINY, shapes_only

from efficientdet_tf import build_model, get_config
from efficientdet_tf.backends.base import gather_nearest
from efficientdet_tf.model.bifpn import fuse
from efficientdet_tf.model.efficientnet import build_classifier
from efficientdet_tf.model.layers import CompositeLayer


def tiny_config(overrides=""):
    """TINY on the five-block backbone: what these tests build is the feature network and the
    heads (B0's sixteen blocks would double each build)."""
    config = get_config("efficientdet-d0", TINY + ("," + overrides if overrides else ""))
    return config.override(FIVE_BLOCK_BACKBONE)


def tiny_model(overrides=""):
    keras.backend.clear_session()
    config = tiny_config(overrides)
    return config, build_model(config)


def run(model, batch=2, seed=0):
    images = np.random.default_rng(seed).normal(size=(batch, *model.inputs[0].shape[1:]))
    return model(images.astype(np.float32), training=False)


@pytest.mark.parametrize(
    "fpn_name, weight_method",
    [("bifpn", m) for m in ("sum", "attn", "fastattn", "channel_attn", "channel_fastattn")]
    + [("fpn", "fastattn"), ("panet", "attn"), ("qufpn", "fastattn")],
)
def test_feature_networks_and_fusion_methods_build_and_run(fpn_name, weight_method):
    config, model = tiny_model(f"fpn_name={fpn_name},fpn_weight_method={weight_method}")
    class_outputs, box_outputs = run(model)
    sizes = [(64 // 2**level) or 1 for level in range(3, 8)]
    assert [tuple(o.shape) for o in class_outputs] == [(2, s, s, 9 * 3) for s in sizes]
    assert [tuple(o.shape) for o in box_outputs] == [(2, s, s, 9 * 4) for s in sizes]
    assert all(np.isfinite(o).all() for o in class_outputs + box_outputs)
    fusion_weights = [v for v in model.weights if "/WSM" in v.path]
    if weight_method == "sum":
        assert not fusion_weights
    else:
        expected_shape = (64,) if weight_method.startswith("channel") else ()
        assert fusion_weights and all(v.shape == expected_shape for v in fusion_weights)


def subclasses(cls) -> list[type]:
    direct = cls.__subclasses__()
    return direct + [indirect for subclass in direct for indirect in subclasses(subclass)]


@pytest.mark.parametrize("build", [
    lambda: tiny_model("fpn_name=qufpn,image_size=[64,128],max_level=6,"
           "heads=object_detection*segmentation")[1],
    lambda: tiny_model("max_level=8,image_size=256,conv_after_downsample=true")[1],
    lambda: build_classifier("efficientnet-lite0", image_size=64, num_classes=5),
], ids=["qufpn two heads rectangular", "extra levels", "classifier"])
def test_models_build_from_shapes_without_calling_layers_and_declare_what_they_compute(
        build, monkeypatch):
    """Composite layers build their sublayers from shapes (`trace_shapes`): Keras runs no `call`
    in a scratch graph (most of the build time otherwise), and the shapes they declare are
    those their `call` gives."""
    calls = []
    for cls in subclasses(CompositeLayer):
        def counted(self, *args, call=cls.call, **kwargs):
            calls.append(type(self).__name__)
            return call(self, *args, **kwargs)
        # `wraps` keeps the signature, from which Keras learns that `call` takes `training`.
        monkeypatch.setattr(cls, "call", functools.wraps(cls.call)(counted))
    model = build()
    assert calls == []
    outputs = run(model, batch=1)
    assert calls
    declared = [tuple(t.shape[1:]) for t in keras.tree.flatten(model.outputs)]
    assert [tuple(t.shape[1:]) for t in keras.tree.flatten(outputs)] == declared


def test_fusion_formulas():
    a, b = np.full((1, 2, 2, 3), 2.0, np.float32), np.full((1, 2, 2, 3), 6.0, np.float32)
    weights = [keras.Variable(1.0), keras.Variable(3.0)]
    np.testing.assert_allclose(fuse([a, b], [], "sum"), 8.0)
    softmax = np.exp([1.0, 3.0]) / np.exp([1.0, 3.0]).sum()
    np.testing.assert_allclose(fuse([a, b], weights, "attn"), 2 * softmax[0] + 6 * softmax[1],
                               rtol=1e-6)
    np.testing.assert_allclose(fuse([a, b], weights, "fastattn"), (2 + 18) / (4 + 1e-4),
                               rtol=1e-6)
    negative = [keras.Variable(-1.0), keras.Variable(1.0)]  # relu drops the negative edge
    np.testing.assert_allclose(fuse([a, b], negative, "fastattn"), 6 / (1 + 1e-4), rtol=1e-6)


def test_class_bias_starts_at_the_prior():
    config, model = tiny_model()
    bias = next(v for v in model.weights if v.path == "class_net/class-predict/bias")
    np.testing.assert_allclose(bias.numpy(), -math.log((1 - 0.01) / 0.01), rtol=1e-6)


def test_variants_conv_heads_pattern_and_extra_levels():
    config, model = tiny_model(
        "separable_conv=false,conv_bn_act_pattern=true,conv_after_downsample=true,"
        "max_level=8,image_size=256,survival_prob=0.8"
    )
    class_outputs, _ = run(model)
    assert [o.shape[1] for o in class_outputs] == [32, 16, 8, 4, 2, 1]
    assert model.get_layer("resample_p8").pool is not None  # P7 already has 64 channels: pool only


def test_rectangular_images():
    _, model = tiny_model("image_size=[96,64]")
    class_outputs, _ = run(model, batch=1)
    assert [tuple(o.shape[1:3]) for o in class_outputs] == [(12, 8), (6, 4), (3, 2), (2, 1),
                                                             (1, 1)]


def test_mixed_precision_computes_in_float16_with_float32_variables():
    _, float32_model = tiny_model()  # clears the session, which also resets the dtype policy
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_model(tiny_config())
    finally:
        keras.config.set_dtype_policy(previous)
    assert {v.dtype for v in model.weights} == {"float32"}
    stages = model.layers[1:]  # backbone, extra levels, feature network, heads
    assert {layer.compute_dtype for layer in stages} == {"float16"}
    assert {t.dtype for layer in stages for t in keras.tree.flatten(layer.output)} == {"float16"}
    model.set_weights(float32_model.get_weights())
    (class_outputs, box_outputs), (expected, _) = run(model), run(float32_model)
    assert {o.dtype.name for o in class_outputs + box_outputs} == {"float16"}
    # The same weights give float32's logits (about -4.6, the prior) to float16 precision.
    for output, want in zip(class_outputs, expected):
        output = np.asarray(output, np.float32)
        np.testing.assert_allclose(output, want, atol=0.05)
        assert not np.array_equal(output, want)


def test_training_mode_updates_batch_norm_statistics():
    _, model = tiny_model()
    moving_mean = next(v for v in model.weights
                       if v.path.endswith("stem/tpu_batch_normalization/moving_mean"))
    before = moving_mean.numpy().copy()
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    model(images, training=True)
    assert not np.allclose(before, moving_mean.numpy())


def _one_training_step(grad_checkpoint: bool):
    """Loss, gradients and moving means after one training step of a tiny model (the five-block
    backbone) built from the same seed (stochastic depth off: recomputation must see the same
    network). Eager: the arithmetic is the point, and tracing the step with its gradients takes
    twenty times as long as running it (tf.recompute_grad recomputes in both)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(3)
    config = get_config("efficientdet-d0", f"{TINY},box_class_repeats=2,"
                        f"backbone_survival_prob=null,grad_checkpoint={grad_checkpoint}")
    model = build_model(config.override(FIVE_BLOCK_BACKBONE))
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)

    with tf.GradientTape() as tape:
        class_outputs, box_outputs = model(images, training=True)
        loss = tf.add_n([tf.reduce_mean(tf.square(o)) for o in class_outputs + box_outputs])
    gradients = tape.gradient(loss, model.trainable_variables)
    moving_means = {v.path: v.numpy() for v in model.weights if v.path.endswith("moving_mean")}
    return float(loss), [g.numpy() for g in gradients], moving_means


def test_grad_checkpoint_gives_the_same_loss_and_gradients():
    loss, gradients, means = _one_training_step(grad_checkpoint=False)
    loss_gc, gradients_gc, means_gc = _one_training_step(grad_checkpoint=True)
    assert loss_gc == pytest.approx(loss, rel=1e-6)
    assert len(gradients_gc) == len(gradients)
    for plain, recomputed in zip(gradients, gradients_gc):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-4, atol=1e-6)
    # The recomputation runs the batch norms again, so (as in the official code) a recomputed
    # one updates its moving mean twice: from 0, (1 - m^2) * mean instead of (1 - m) * mean.
    recomputed_bn = "efficientnet-b0/blocks_1/tpu_batch_normalization/moving_mean"
    np.testing.assert_allclose(means_gc[recomputed_bn], 1.99 * means[recomputed_bn], rtol=1e-4)
    stem_bn = "efficientnet-b0/stem/tpu_batch_normalization/moving_mean"
    np.testing.assert_allclose(means_gc[stem_bn], means[stem_bn], rtol=1e-6)


def official_fpn_config(topology, weight_method=None) -> dict:
    """A topology in the official `fpn_config` form."""
    nodes = [{"feat_level": n.level, "inputs_offsets": list(n.input_ids)} for n in topology.nodes]
    return {"nodes": nodes, **({"weight_method": weight_method} if weight_method else {})}


def test_fpn_config_builds_the_network_it_describes():
    """An official fpn_config that spells out PANet with weight_method sum is the network of
    fpn_name=panet, fpn_weight_method=sum: same variables, same outputs for the same weights."""
    from efficientdet_tf.model.fpn_topology import panet

    _, reference = tiny_model("fpn_name=panet,fpn_weight_method=sum")
    reference_outputs = run(reference)
    weights = {v.path: v.numpy() for v in reference.weights}
    keras.backend.clear_session()
    config = tiny_config().override(
        {"fpn_config": official_fpn_config(panet(3, 7), "sum"), "fpn_weight_method": "fastattn"})
    model = build_model(config)
    assert {v.path: tuple(v.shape) for v in model.weights} == {
        path: value.shape for path, value in weights.items()}
    for variable in model.weights:
        variable.assign(weights[variable.path])
    for got, expected in zip(tf.nest.flatten(run(model)), tf.nest.flatten(reference_outputs)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_fpn_config_of_a_new_topology_runs():
    """A bottom-up chain that no fpn_name gives."""
    keras.backend.clear_session()
    chain = [{"feat_level": 3, "inputs_offsets": [0]}] + [
        {"feat_level": level, "inputs_offsets": [level - 3, level + 1]} for level in range(4, 8)]
    model = build_model(tiny_config().override({"fpn_config": {"nodes": chain}}))
    class_outputs, _ = run(model)
    assert [tuple(o.shape[1:3]) for o in class_outputs] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    fusion_weights = [v for v in model.weights if "/WSM" in v.path]
    assert len(fusion_weights) == 1 + 2 * 4  # fastattn (fpn_weight_method): one per input


def test_backbone_config_replaces_the_stages_before_scaling():
    """official backbone_config: the blocks replace EfficientNet's before backbone_name's
    compound scaling. B0's own blocks give the default network; a change shows in the weights."""
    from test_config import B0_BLOCKS

    def backbone_shapes(blocks):
        keras.backend.clear_session()
        config = get_config("efficientdet-d0", TINY).override(
            {"backbone_name": "efficientnet-b1"} | (
                {"backbone_config": {"blocks": blocks}} if blocks else {}))
        with shapes_only():
            backbone = build_model(config).get_layer("efficientnet-b1")
            assert type(backbone).from_config(backbone.get_config()).stages == backbone.stages
            return {v.path: tuple(v.shape) for v in backbone.weights}

    default = backbone_shapes(None)
    assert backbone_shapes(B0_BLOCKS) == default
    changed = backbone_shapes(["r2_k5_s11_e1_i32_o16_se0.25"] + B0_BLOCKS[1:])
    # B1 scales depth by 1.1: ceil(2 * 1.1) = 3 blocks in the first stage instead of 2.
    assert changed["efficientnet-b1/blocks_0/depthwise_conv2d/kernel"] == (5, 5, 32, 1)
    blocks = {path.split("/")[1] for path in changed} - {"stem", "head"}
    assert len(blocks) == len({path.split("/")[1] for path in default} - {"stem", "head"}) + 1


@pytest.mark.parametrize("size, new_size", [((4, 4), (8, 8)), ((7, 5), (13, 9)), ((3, 6), (5, 11))])
def test_resizing_in_keras_ops_gives_the_official_kernels_features(size, new_size):
    features = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    official = tf.raw_ops.ResizeNearestNeighbor(
        images=features, size=new_size, align_corners=False, half_pixel_centers=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(gather_nearest(features, new_size)),
                                  official.numpy())
