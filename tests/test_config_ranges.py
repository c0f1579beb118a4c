"""Every hparam value is checked: numbers for range (finite, positive sizes and counts,
probabilities and decays in their intervals, the feature levels and the image size together),
and any override string gives a valid `Config` or a one-line `ConfigError`, nothing else."""

import math
import random

import pytest
from cli_in_process import run_cli

from efficientdet_tf.config import Config, ConfigError, available_models, get_config
from efficientdet_tf.config.merging import flat_keys
from efficientdet_tf.config.schema import schema
from efficientdet_tf.config.types import ListOf, Nullable, Number
from efficientdet_tf.config.validation import validate


@pytest.fixture(scope="module")
def d0():
    return get_config("efficientdet-d0")


@pytest.mark.parametrize("override, message", [
    # the values issue 35 found accepted
    ("image_size=3", r"image_size=\[3, 3\] is too small for min_level=3: each side must be at "
                     r"least 2\*\*\(min_level \+ 1\) = 16"),
    ("anchor_scale=0", r"'anchor_scale' = 0 must be a finite number above 0"),
    ("learning_rate=nan", r"'learning_rate' = 'nan' must be a finite number above 0"),
    ("learning_rate=-1", r"'learning_rate' = -1 must be a finite number above 0"),
    ("momentum=inf", r"'momentum' = 'inf' must be a finite number in \[0, 1\)"),
    ("nms_configs.iou_thresh=nan", r"'nms_configs.iou_thresh' = 'nan' must be a finite number in "
                                   r"\[0, 1\]"),
    ("nms_configs.iou_thresh=-1", r"'nms_configs.iou_thresh' = -1 must be a finite number in"),
    ("moving_average_decay=2", r"'moving_average_decay' = 2 must be a finite number in \[0, 1\)"),
    ("label_smoothing=1.5", r"'label_smoothing' = 1.5 must be a finite number in \[0, 1\)"),
    ("alpha=nan", r"'alpha' = 'nan' must be a finite number in \[0, 1\]"),
    ("max_level=3", r"min_level=3, max_level=3: max_level must be above min_level"),
    ("num_epochs=0", r"'num_epochs' = 0 must be at least 1"),
    # and others of each kind
    ("learning_rate=1e309", r"'learning_rate' = inf must be a finite number above 0"),
    ("weight_decay=" + "9" * 400, r"'weight_decay' = 9999.* must be a finite number at least 0"),
    ("min_level=0", r"'min_level' = 0 must be in \[1, 5\]"),
    ("max_level=13", r"'max_level' = 13 must be in \[2, 12\]"),
    ("image_size=64x8", r"image_size=\[8, 64\] is too small for min_level=3"),
    ("min_level=5,max_level=7,image_size=32", r"at least 2\*\*\(min_level \+ 1\) = 64"),
    ("image_size=0x0", r"'image_size' = 0 must be positive"),  # 0x0: Python's hex 0
    ("aspect_ratios=[1.0,0.0]", r"'aspect_ratios' = \[1.0, 0.0\] must be a finite number above 0"),
    ("stddev_rgb=0", r"'stddev_rgb' = 0 must be a finite number above 0"),
    ("mean_rgb=1*nan*2", r"'mean_rgb' = '1\*nan\*2' must be a finite number\.$"),
    ("class_prior_prob=1", r"'class_prior_prob' = 1 must be a finite number in \(0, 1\)"),
    ("survival_prob=0", r"'survival_prob' = 0 must be a finite number in \(0, 1\]"),
    ("backbone_survival_prob=1.5", r"'backbone_survival_prob' = 1.5 must be a finite number in"),
    ("batch_norm_epsilon=0", r"'batch_norm_epsilon' = 0 must be a finite number above 0"),
    ("gamma=-1", r"'gamma' = -1 must be a finite number at least 0"),
    ("delta=0", r"'delta' = 0 must be a finite number above 0"),
    ("box_loss_weight=-inf", r"'box_loss_weight' = '-inf' must be a finite number at least 0"),
    ("lr_warmup_init=0", r"'lr_warmup_init' = 0 must be a finite number above 0"),
    ("clip_gradients_norm=-1", r"'clip_gradients_norm' = -1 must be a finite number at least 0"),
    ("positives_momentum=-inf", r"'positives_momentum' = '-inf' must be a finite number below 1"),
    ("nms_configs.score_thresh=1.5", r"'nms_configs.score_thresh' = 1.5 must be a finite number"),
    ("nms_configs.max_nms_inputs=-1", r"'nms_configs.max_nms_inputs' = -1 must be at least 0"),
    ("jitter_min=0", r"'jitter_min' = 0 must be a finite number above 0"),
    ("map_freq=0", r"'map_freq' = 0 must be at least 1"),
])
def test_a_value_out_of_range_is_one_line_naming_key_value_and_range(d0, override, message):
    with pytest.raises(ConfigError, match=message) as error:
        d0.override(override)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("override", [
    "nms_configs.iou_thresh=0,nms_configs.score_thresh=0,nms_configs.sigma=0",
    "moving_average_decay=0,clip_gradients_norm=0,weight_decay=0",
    "positives_momentum=null", "positives_momentum=0", "positives_momentum=-1",
    "min_level=1,max_level=2,image_size=4", "min_level=5,max_level=12,image_size=64",
    "image_size=16", "image_size=64x16", "lr_warmup_epoch=0,max_nms_inputs=0"
    .replace("max_nms", "nms_configs.max_nms"),
    "label_smoothing=0,alpha=0,gamma=0,box_loss_weight=0",
    "mean_rgb=-1e6,backbone_survival_prob=1,survival_prob=1",
])
def test_values_read_as_off_or_the_default_and_the_bounds_themselves_are_accepted(d0, override):
    d0.override(override)


def _numbers(kind):
    """The Number types inside a value type (a nullable or a list wraps one)."""
    while isinstance(kind, (Nullable, ListOf)):
        kind = kind.inner
    return kind if isinstance(kind, Number) else None


def _leaf_types(group=None, prefix=""):
    for key, kind in (group or schema()).items():
        if isinstance(kind, dict):
            yield from _leaf_types(kind, f"{prefix}{key}.")
        else:
            yield prefix + key, kind


def test_every_float_hparam_refuses_nan_and_infinities(d0):
    floats = [key for key, kind in _leaf_types() if (_numbers(kind) or Number(int)).kind is float]
    assert len(floats) >= 30
    lists = {key for key, kind in _leaf_types() if isinstance(kind, ListOf)}
    for key in floats:
        for value in ("nan", "inf", "-inf", "1e309"):
            with pytest.raises(ConfigError, match=rf"'{key}' = .* must be a finite number"):
                d0.override(f"{key}=[1.0,{value},1.0]" if key in lists else f"{key}={value}")


def test_every_number_hparam_declares_a_bound_but_the_means():
    unbounded = [key for key, kind in _leaf_types() if _numbers(kind)
                 and _numbers(kind).range.low is None and _numbers(kind).range.high is None]
    assert unbounded == ["mean_rgb"]


@pytest.mark.parametrize("name", available_models())
def test_official_configs_and_their_saved_dicts_validate(name):
    config = get_config(name)
    assert Config(config.as_dict()) == config


def test_the_command_line_answers_an_out_of_range_hparam_in_one_line(capsys):
    status = run_cli("--mode=summary", "--model_name=efficientdet-d0",
                     "--hparams=learning_rate=nan")
    assert status != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].endswith("hparam 'learning_rate' = 'nan' must be a finite number above 0.")
    assert len(lines) == 1


# --- fuzzing ----------------------------------------------------------------------------------

FUZZ_VALUES = [
    "nan", "inf", "-inf", "-1", "0", "1", "2", "3", "0.5", "0.99", "1.0", "-0.0", "1e309",
    "-1e309", "1e-400", "9" * 30, "-" + "9" * 30, "1" + "0" * 5000, "[1,2]", "[1,2,3]", "[]",
    "[0.5,nan]", "[[1]]", "3x4", "0x0", "64x64", "16x2", "x", "1x", "4x4x4", "16", "64", "96",
    "128", "(", "[", "]", "[1,", "'", "a*b", "1*2*3", "1*inf*2", "true", "false", "null", "",
    "'s'", "{}", "{1: 'a'}", "{0: 'a'}", "{'nodes': []}", "hard", "bifpn", "segmentation",
    "[object_detection,segmentation]", "r1_k3_s11_e1_i32_o16", "2**5", "1+2j", "{1, 2}", "b'x'",
]


def _fuzz_key(rng, keys):
    key = rng.choice(keys)
    return rng.choice([key, key, key, key + "x", key + ".inner", key.split(".")[0]])


def _assert_valid(config):
    """A config that the fuzz produced passes every check again, and its numbers are finite."""
    values = config.as_dict()
    validate(values)
    assert Config(values).as_dict() == values

    def finite(value):
        if isinstance(value, float):
            assert math.isfinite(value)
        elif isinstance(value, dict):
            [finite(v) for v in value.values()]
        elif isinstance(value, list):
            [finite(v) for v in value]
    finite(values)
    assert 1 <= values["min_level"] <= 5 < 13 > values["max_level"] > values["min_level"]
    assert min(values["image_size"]) >= 2 ** (values["min_level"] + 1)


def test_random_override_strings_give_a_valid_config_or_a_config_error(d0):
    rng = random.Random(35)
    keys = flat_keys(schema())
    outcomes = {"valid": 0, "refused": 0}
    for _ in range(3000):
        pairs = [f"{_fuzz_key(rng, keys)}={rng.choice(FUZZ_VALUES)}"
                 for _ in range(rng.choice((1, 1, 1, 2, 3)))]
        text = ",".join(pairs)
        try:
            config = d0.override(text)
        except ConfigError as error:
            assert "\n" not in str(error), text
            outcomes["refused"] += 1
            continue
        _assert_valid(config)
        outcomes["valid"] += 1
    assert outcomes["valid"] > 100 and outcomes["refused"] > 1000, outcomes  # both exercised
