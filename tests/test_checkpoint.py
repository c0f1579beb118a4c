"""Official-layout checkpoints: the fixture's outputs, EMA shadows, round trips, mismatches."""

import numpy as np
import pytest
import tensorflow as tf
from backends import BACKEND
from official_fixture import (
    FIXTURE_DIR,
    assert_official_raw_outputs,
    expected_outputs,
    fixture_network,
    fixture_weights_restored,
    requires_fixture,
)

from efficientdet_tf import (
    CheckpointMismatchError,
    build_model,
    get_config,
    load_weights,
    save_weights,
)
from efficientdet_tf.model.checkpoint import EMA_SUFFIX, checkpoint_name

TINY = "image_size=64,fpn_cell_repeats=1,box_class_repeats=1"


pytestmark = pytest.mark.any_backend

@pytest.fixture(scope="module")
def fixture_model():
    return fixture_network()


@requires_fixture
def test_fixture_checkpoint_gives_the_official_outputs(fixture_model):
    expected = expected_outputs()
    # On TensorFlow eagerly: compiling D0 (predict) costs more than running it once. JAX runs op
    # by op slower than it compiles.
    class_outputs, box_outputs = (
        fixture_model(expected["preprocessed"], training=False) if BACKEND == "tensorflow"
        else fixture_model.predict(expected["preprocessed"], verbose=0))
    assert_official_raw_outputs(class_outputs, box_outputs)


@requires_fixture
def test_every_model_variable_maps_to_a_fixture_entry_and_ema_is_preferred(fixture_model):
    reader = tf.train.load_checkpoint(str(FIXTURE_DIR / "ckpt"))
    for variable in fixture_model.weights:
        shadow = reader.get_tensor(checkpoint_name(variable) + EMA_SUFFIX)
        np.testing.assert_array_equal(variable.numpy(), shadow)
    # use_ema=False into the same model (a second D0 costs a build), its EMA weights back after.
    with fixture_weights_restored() as model:
        load_weights(model, FIXTURE_DIR / "ckpt", use_ema=False)
        kernel = "efficientnet-b0/stem/conv2d/kernel"
        raw_kernel = next(v for v in model.weights if checkpoint_name(v) == kernel).numpy()
        np.testing.assert_array_equal(raw_kernel, reader.get_tensor(kernel))
        assert not np.array_equal(raw_kernel, reader.get_tensor(kernel + EMA_SUFFIX))


def tiny_model(overrides=""):
    return build_model(get_config("efficientdet-d0", TINY + ("," + overrides if overrides else "")))


def test_save_then_load_round_trip_with_ema(tmp_path):
    source, target = tiny_model(), tiny_model()
    ema = {checkpoint_name(v): v.numpy() + 1.0 for v in source.weights}
    prefix = save_weights(source, tmp_path / "ckpt" / "model", ema_values=ema)
    load_weights(target, prefix)
    for variable in target.weights:
        np.testing.assert_array_equal(variable.numpy(), ema[checkpoint_name(variable)])
    load_weights(target, tmp_path / "ckpt", use_ema=False)  # a directory with one checkpoint
    for mine, theirs in zip(source.weights, target.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    assert not list((tmp_path / "ckpt").glob("*tmp*"))


def test_wrong_shapes_fail_with_the_list_unless_skipped(tmp_path, caplog):
    three_classes = tiny_model("num_classes=3")
    prefix = save_weights(three_classes, tmp_path / "three_classes")
    model = tiny_model("num_classes=90")
    with pytest.raises(CheckpointMismatchError) as error:
        load_weights(model, prefix)
    message = str(error.value)
    assert "2 variables have another shape" in message
    assert ("class_net/class-predict/pointwise_kernel: checkpoint [1, 1, 64, 27] "
            "vs model [1, 1, 64, 810]") in message
    assert "class_net/class-predict/bias" in message
    assert "skip_mismatch=True" in message

    bias_before = next(v for v in model.weights if v.path == "class_net/class-predict/bias").numpy()
    skipped = load_weights(model, prefix, skip_mismatch=True)
    assert sorted(skipped) == ["class_net/class-predict/bias",
                               "class_net/class-predict/pointwise_kernel"]
    assert "class_net/class-predict/pointwise_kernel" in caplog.text
    bias_after = next(v for v in model.weights if v.path == "class_net/class-predict/bias").numpy()
    np.testing.assert_array_equal(bias_before, bias_after)
    saved = {checkpoint_name(v): v.numpy() for v in three_classes.weights}
    for variable in model.weights:  # all the others are loaded
        if checkpoint_name(variable) not in skipped:
            np.testing.assert_array_equal(variable.numpy(), saved[checkpoint_name(variable)])


def test_missing_variables_are_listed(tmp_path):
    prefix = save_weights(tiny_model("fpn_weight_method=sum"), tmp_path / "sum")
    with pytest.raises(CheckpointMismatchError,
                       match=r"missing from the checkpoint:\n  fpn_cells/cell_0/fnode0/WSM"):
        load_weights(tiny_model("fpn_weight_method=fastattn"), prefix, skip_mismatch=True)


def test_bad_paths_say_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="give a checkpoint prefix"):
        load_weights(tiny_model(), tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="No checkpoint in directory"):
        load_weights(tiny_model(), tmp_path)
