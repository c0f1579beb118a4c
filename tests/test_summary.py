"""Official parameter counts and FLOPs, and `main.py --mode=summary`."""

import re

import keras
import pytest
from cli_in_process import run_cli
from small_models import shapes_only

from efficientdet_tf import build_model, get_config
from efficientdet_tf.model.checkpoint import checkpoint_name
from efficientdet_tf.model.summary import count_params

# (total, trainable) parameters of the official models with num_classes=90.
OFFICIAL_PARAMS = {
    "efficientdet-d0": (3_927_203, 3_880_067),
    "efficientdet-d1": (6_697_354, 6_625_898),
    "efficientdet-d2": (8_178_815, 8_097_039),
    "efficientdet-d3": (12_146_600, 12_032_296),
    "efficientdet-d4": (20_890_987, 20_723_675),
    "efficientdet-d5": (33_880_707, 33_653_315),
    "efficientdet-d6": (52_183_766, 51_871_782),
    "efficientdet-d7": (52_183_766, 51_871_782),
    "efficientdet-d7x": (77_564_894, 77_147_166),
    "efficientdet-lite0": (3_290_606, 3_243_470),
    "efficientdet-lite1": (4_311_390, 4_248_318),
    "efficientdet-lite2": (5_324_894, 5_252_334),
    "efficientdet-lite3": (8_455_054, 8_350_862),
    "efficientdet-lite3x": (9_392_574, 9_280_862),
    "efficientdet-lite4": (15_286_398, 15_130_894),
}


def built_without_values(build):
    """`build()`'s model, shapes only (`small_models.shapes_only`), and its (total, trainable)
    parameter counts."""
    with shapes_only():
        model = build()
        return model, (count_params(model.weights), count_params(model.trainable_weights))


@pytest.mark.slow
@pytest.mark.any_backend
@pytest.mark.parametrize("name, params", OFFICIAL_PARAMS.items())
def test_every_model_builds_at_its_image_size_with_the_official_parameter_count(name, params):
    config = get_config(name)
    model, counts = built_without_values(lambda: build_model(config))
    assert tuple(model.inputs[0].shape[1:3]) == config.image_size
    assert counts == params


@pytest.mark.any_backend
def test_d0_with_qufpn_has_the_official_parameter_count_and_names():
    """The official efficientdet-d0 with fpn_name=qufpn; parameters do not depend on the image
    size, so a small one keeps the test fast."""
    model, counts = built_without_values(
        lambda: build_model(get_config("efficientdet-d0", "fpn_name=qufpn,image_size=128")))
    assert counts == (4_184_314, 4_131_418)
    names = {checkpoint_name(v) for v in model.weights}
    # fnode8 is the first node of the bottom-up path from the inputs: P4 from P4 and P3 (40
    # channels at D0, so projected to 64), with 13 features before it.
    assert "fpn_cells/cell_0/fnode8/resample_1_0_13/conv2d/kernel" in names
    assert "fpn_cells/cell_2/fnode20/op_after_combine25/conv/pointwise_kernel" in names


@pytest.mark.slow  # D1 at 640 px traced and frozen to count its FLOPs
def test_summary_mode_prints_the_official_parameter_and_flops_counts(capfd):
    """`--mode=summary` on efficientdet-d1: its official parameters and FLOPs (one FLOPs count,
    the costly part: tracing and freezing the graph). In process (the command line's flags,
    output and status as `efficientdet`); that a new process hides TensorFlow's start-up lines
    is test_cli_devices_and_logs.py's."""
    keras.backend.clear_session()
    assert run_cli("--mode=summary", "--model_name=efficientdet-d1") == 0
    stdout, stderr = capfd.readouterr()
    assert "Total params: 6,697,354" in stdout
    assert "Trainable params: 6,625,898" in stdout
    flops_line = next(line for line in stdout.splitlines() if line.startswith("FLOPs"))
    flops = float(flops_line.split(":")[1].strip().rstrip("B"))
    assert flops == pytest.approx(6.14, rel=0.01)
    assert "fpn_cells" in stdout  # the layer table
    # TensorFlow's C++ lines ("I1123 19:14:16.835 ... devices.cc:67] ...") of the FLOPs count
    # (grappler) are hidden: capfd reads the process's stderr, native writes included.
    assert not re.search(r"^[IWEF]\d{4} |absl::InitializeLog", stderr, re.MULTILINE), (
        stderr[:2000])


def test_summary_mode_reports_a_bad_override_by_name(capsys):
    assert run_cli("--mode=summary", "--hparams=num_clases=3") == 2
    # One line naming the fix, not absl's page of flag help after it.
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "error: Unknown hparam 'num_clases'. Closest known keys: num_classes, "
        "seg_num_classes, num_scales. See efficientdet_tf/hparams/base.yaml for every key.")
