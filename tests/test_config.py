"""Config loading, overrides and their errors."""

import pytest
import yaml

from efficientdet_tf.config import ConfigError, available_models, get_config, parse_overrides
from efficientdet_tf.config.schema import derive_schema
from efficientdet_tf.config.types import Float, Int, Nullable, OneOf

ALL_MODELS = [f"efficientdet-d{i}" for i in range(8)] + ["efficientdet-d7x"] + [
    f"efficientdet-lite{i}" for i in ("0", "1", "2", "3", "3x", "4")
]


def test_every_official_model_has_a_valid_config():
    assert sorted(available_models()) == sorted(ALL_MODELS)
    for name in ALL_MODELS:
        assert get_config(name).name == name


@pytest.mark.parametrize(
    "name, expected",
    [
        ("efficientdet-d0", dict(backbone_name="efficientnet-b0", image_size=(512, 512),
                                 fpn_num_filters=64, fpn_weight_method="fastattn",
                                 backbone_survival_prob=None)),
        ("efficientdet-d7", dict(backbone_name="efficientnet-b6", anchor_scale=5.0,
                                 image_size=(1536, 1536), fpn_weight_method="sum")),
        ("efficientdet-d7x", dict(backbone_name="efficientnet-b7", max_level=8,
                                  anchor_scale=4.0, fpn_weight_method="sum")),
        ("efficientdet-lite0", dict(act_type="relu6", fpn_weight_method="sum",
                                    mean_rgb=[127.0] * 3, stddev_rgb=[128.0] * 3,
                                    image_size=(320, 320), anchor_scale=3.0)),
    ],
)
def test_official_values(name, expected):
    config = get_config(name)
    for key, value in expected.items():
        assert config[key] == value, key


def test_string_overrides_with_nested_keys_lists_and_image_size():
    config = get_config(
        "efficientdet-d0",
        "num_classes=3, nms_configs.method=hard,aspect_ratios=[1.0,2.0],image_size=640x320,"
        "iou_loss_type=giou,var_freeze_expr=null,weight_decay=1e-4",
    )
    assert config.num_classes == 3
    assert config.nms_configs.method == "hard"
    assert config.nms_configs.max_output_size == 100  # siblings untouched
    assert config.aspect_ratios == [1.0, 2.0]
    assert config.image_size == (320, 640)  # "WxH" -> (height, width)
    assert config.iou_loss_type == "giou"
    assert config.var_freeze_expr is None
    assert config.weight_decay == pytest.approx(1e-4)


def test_int_is_accepted_for_a_float_and_image_size_list():
    config = get_config("efficientdet-d0", {"anchor_scale": 3, "image_size": [256, 384]})
    assert config.anchor_scale == 3.0 and isinstance(config.anchor_scale, float)
    assert config.image_size == (256, 384)


def test_official_override_string_forms():
    """official hparams_config_test.py::test_config_override, with its strings and values."""
    assert parse_overrides("a=true,b=ss") == {"a": True, "b": "ss"}
    assert parse_overrides("a=100,,,b=2.3,") == {"a": 100, "b": 2.3}  # extra ',' is fine
    assert parse_overrides("a=2x3,b=50") == {"a": "2x3", "b": 50}
    with pytest.raises(ValueError, match="Invalid hparams item 'invalid_string'"):
        parse_overrides("a=true,invalid_string")


def test_official_nested_override():
    """official hparams_config_test.py::test_config_override_recursive."""
    assert parse_overrides("y.y0=2,y.y1=3") == {"y": {"y0": 2, "y1": 3}}
    config = get_config("efficientdet-d0", "nms_configs.method=hard,nms_configs.sigma=0.3")
    assert (config.nms_configs.method, config.nms_configs.sigma) == ("hard", 0.3)


def test_official_star_separated_list_override():
    """official hparams_config_test.py::test_config_override_list: `x=3.0*4.0*5.0`."""
    config = get_config("efficientdet-d0", "aspect_ratios=3.0*4.0*5.0,mean_rgb=1*2*3")
    assert config.aspect_ratios == [3.0, 4.0, 5.0]
    assert config.mean_rgb == [1.0, 2.0, 3.0]
    # Only list-typed keys split at '*': a regex keeps its '*'.
    assert get_config("efficientdet-d0", "var_freeze_expr=(efficientnet|fpn).*").var_freeze_expr \
        == "(efficientnet|fpn).*"
    with pytest.raises(ConfigError, match=r"'mean_rgb' = '1\*2'.*a list of 3 float"):
        get_config("efficientdet-d0", "mean_rgb=1*2")
    with pytest.raises(ConfigError, match=r"'aspect_ratios' = '1.0\*wide'.*a list of float"):
        get_config("efficientdet-d0", "aspect_ratios=1.0*wide")


@pytest.mark.parametrize("overrides, heads", [
    ("heads=[segmentation]", ["segmentation"]),
    ("heads=[object_detection,segmentation],num_classes=3", ["object_detection", "segmentation"]),
    ("heads=[ object_detection , segmentation ]", ["object_detection", "segmentation"]),
    ("heads=['segmentation']", ["segmentation"]),
    ("heads=object_detection*segmentation", ["object_detection", "segmentation"]),
    ("heads=segmentation", ["segmentation"]),
])
def test_heads_take_every_list_form_the_error_message_offers(overrides, heads):
    assert get_config("efficientdet-d0", overrides).heads == heads


def test_bracket_lists_of_words_are_read_only_for_list_valued_keys():
    config = get_config("efficientdet-d0", "aspect_ratios=[1.0,2.0],num_classes=3")
    assert (config.aspect_ratios, config.num_classes) == ([1.0, 2.0], 3)
    assert get_config("efficientdet-d0", "var_freeze_expr=[ab]").var_freeze_expr == "[ab]"
    with pytest.raises(ConfigError, match=r"'heads' = '\[segmentation,boxes\]'.*one of"):
        get_config("efficientdet-d0", "heads=[segmentation,boxes]")
    with pytest.raises(ConfigError, match=r"'aspect_ratios' = '\[1.0,wide\]'.*a list of float"):
        get_config("efficientdet-d0", "aspect_ratios=[1.0,wide]")


def test_official_image_size_string_is_width_by_height():
    assert get_config("efficientdet-d0", "image_size=640x480").image_size == (480, 640)
    assert get_config("efficientdet-d0", "image_size=640X480").image_size == (480, 640)


def test_yaml_file_override(tmp_path):
    """official hparams_config_test.py::test_config_yaml (a YAML file with a nested key)."""
    path = tmp_path / "mine.yaml"
    path.write_text("num_classes: 5\nnms_configs:\n  max_output_size: 50\n")
    config = get_config("efficientdet-d1", str(path))
    assert (config.num_classes, config.nms_configs.max_output_size) == (5, 50)


def test_save_and_reload_round_trip(tmp_path):
    config = get_config("efficientdet-lite3x", "num_classes=7,image_size=[320,480]")
    config.save(tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["image_size"] == [320, 480]
    assert get_config(tmp_path / "config.yaml") == config


def test_config_is_read_only_and_override_returns_a_copy():
    config = get_config("efficientdet-d0")
    with pytest.raises(AttributeError, match="override"):
        config.num_classes = 3
    assert config.override("num_classes=3").num_classes == 3
    assert config.num_classes == 90


@pytest.mark.parametrize(
    "overrides, message",
    [
        ("num_clases=3", r"Unknown hparam 'num_clases'.*Closest known keys: num_classes"),
        ("nms_configs.methd=hard", r"'nms_configs.methd'.*nms_configs.method"),
        ("num_classes=three", r"'num_classes' = 'three'.*expected int"),
        ("jitter_min=fast", r"'jitter_min'.*expected float"),
        ("input_rand_hflip=3", r"'input_rand_hflip' = 3.*expected bool"),
        ("fpn_weight_method=avg", r"'fpn_weight_method' = 'avg'.*one of 'sum', 'attn'"),
        ("mean_rgb=[1.0,2.0]", r"'mean_rgb'.*a list of 3 float"),
        ("nms_configs=hard", r"'nms_configs' is a group of keys"),
        ("num_classes", r"key=value"),
        ("num_classes=3,oops", r"Invalid hparams item 'oops'"),
        ("min_level=6", r"'min_level' = 6 must be in \[1, 5\]"),
        ("jitter_min=3.0", r"jitter_min=3.0 exceeds jitter_max"),
        ("num_classes=0", r"'num_classes' = 0 must be at least 1"),
        ("missing.yaml", r"'missing.yaml' does not exist"),
    ],
)
def test_bad_overrides_name_the_key_and_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_config("efficientdet-d0", overrides)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ConfigError, match="Did you mean efficientdet-d7"):
        get_config("efficientdet-d9")


def test_parse_overrides_keeps_commas_inside_brackets():
    assert parse_overrides("aspect_ratios=[1.0, 2.0, 0.5],num_scales=2") == {
        "aspect_ratios": [1.0, 2.0, 0.5],
        "num_scales": 2,
    }


def test_the_schema_is_derived_from_base_yaml():
    """base.yaml alone lists the keys; a bool or str key takes its default's type, any other
    declares its type (a number with its range)."""
    defaults = {"steps": 3, "rate": 0.5, "flip": True, "name": "x", "method": "hard",
                "group": {"size": 2, "limit": None}}
    declared = {"steps": Int(ge=1), "rate": Float(gt=0, lt=1), "method": OneOf(("hard", "soft")),
                "group": {"size": Int(ge=0), "limit": Nullable(Float())}}
    schema = derive_schema(defaults, declared)
    described = {key: kind.describe() for key, kind in schema.items() if key != "group"}
    assert described == {"steps": "int", "rate": "float", "flip": "bool", "name": "str",
                         "method": "one of 'hard', 'soft'"}
    assert {k: v.describe() for k, v in schema["group"].items()} == {
        "size": "int", "limit": "float or null"}


@pytest.mark.parametrize("defaults, declared, message", [
    ({"limit": None}, {}, r"hparam 'limit' = None in base.yaml: declare its type"),
    ({"steps": 3}, {}, r"hparam 'steps' = 3 in base.yaml: declare its type \(a number with its"),
    ({"ratios": [1.0]}, {}, r"hparam 'ratios' = \[1.0\] in base.yaml: declare its type"),
    ({"a": 1}, {"a": Int(), "b": Int()}, r"Types are declared for \['b'\], which base.yaml lacks"),
])
def test_a_schema_that_cannot_be_derived_says_why(defaults, declared, message):
    with pytest.raises(ConfigError, match=message):
        derive_schema(defaults, declared)


# The official hparams that base.yaml once lacked, at their official defaults
# (hparams_config.default_detection_configs); grid_mask aside.
OFFICIAL_DEFAULTS_ONCE_UNKNOWN = {
    "backbone_config": None, "ckpt_var_scope": None, "data_format": "channels_last",
    "dataset_type": None, "fpn_config": None, "grid_mask": False, "img_summary_steps": None,
    "is_training_bn": True,
    "loss_scale": None, "nms_configs": {"pyfunc": False, "score_thresh": 0.0},
    "positives_momentum": None,
    "regenerate_source_id": False, "sample_image": None, "save_freq": "epoch",
    "scale_range": False, "strategy": None, "target_size": None, "use_keras_model": True,
    "verbose": 1,
}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_official_defaults_of_every_official_key_load(name, tmp_path):
    path = tmp_path / "official.yaml"
    path.write_text(yaml.safe_dump(OFFICIAL_DEFAULTS_ONCE_UNKNOWN))
    assert get_config(name, str(path)) == get_config(name)


def test_official_null_and_scalar_forms_of_known_keys():
    """Official defaults fpn_name=None, fpn_weight_method=None (bifpn, fastattn) and the lite
    models' single-number mean_rgb / stddev_rgb."""
    config = get_config("efficientdet-d0", {"fpn_name": None, "fpn_weight_method": None,
                                            "mean_rgb": 127.0, "stddev_rgb": 128})
    assert (config.fpn_name, config.fpn_weight_method) == ("bifpn", "fastattn")
    assert (config.mean_rgb, config.stddev_rgb) == ([127.0] * 3, [128.0] * 3)


def test_zero_nms_thresholds_are_the_method_defaults_as_officially():
    """official postprocess reads `score_thresh or 0.001` (its default is 0), `iou_thresh or
    0.5`, `sigma or 0.5`."""
    config = get_config("efficientdet-d0", "nms_configs.score_thresh=0.0,nms_configs.sigma=0,"
                                           "nms_configs.iou_thresh=0.0")
    nms = config.nms_configs
    assert (nms.score_thresh, nms.sigma, nms.iou_thresh) == (None, None, None)
    assert get_config("efficientdet-d0", "nms_configs.score_thresh=0.2").nms_configs \
        .score_thresh == 0.2


@pytest.mark.parametrize("override, alternative", [
    ("data_format=channels_first", "channels_last only"),
    ("strategy=tpu", "--strategy"),
    ("is_training_bn=false", "Keras's training flag"),
    ("use_keras_model=false", "the Keras model is the only one"),
    ("nms_configs.pyfunc=true", "NMS runs in the TensorFlow graph"),
    ("ckpt_var_scope=old", "--backbone_ckpt"),
    ("dataset_type=sstable", "--train_file_pattern"),
    ("save_freq=100", "--save_checkpoints_steps"),
    ("verbose=0", "--verbosity"),
])
def test_official_keys_without_a_job_here_refuse_other_values_in_one_line(override, alternative):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as error:
        get_config("efficientdet-d0", override)
    message = str(error.value)
    assert message.startswith(f"hparam {key!r} = ") and "is not supported" in message
    assert alternative in message and "\n" not in message


@pytest.mark.parametrize("override, message", [
    ("positives_momentum=1.0", r"'positives_momentum' = 1.0 must be a finite number below 1"),
    ("loss_scale=0", r"'loss_scale' = 0 must be a finite number above 0"),
    ("img_summary_steps=0", r"'img_summary_steps' = 0 must be at least 1"),
    ("target_size=0", r"'target_size' = 0 must be positive"),
])
def test_implemented_official_keys_check_their_range(override, message):
    with pytest.raises(ConfigError, match=message):
        get_config("efficientdet-d0", override)


BIFPN_P3_P7 = [(6, [3, 4]), (5, [2, 5]), (4, [1, 6]), (3, [0, 7]),
               (4, [1, 7, 8]), (5, [2, 6, 9]), (6, [3, 5, 10]), (7, [4, 11])]


def fpn_nodes(pairs):
    return [{"feat_level": level, "inputs_offsets": offsets} for level, offsets in pairs]


def test_fpn_config_in_the_official_form_loads_and_round_trips(tmp_path):
    path = tmp_path / "custom_fpn.yaml"
    path.write_text(yaml.safe_dump({"fpn_config": {"nodes": fpn_nodes(BIFPN_P3_P7),
                                                   "weight_method": "sum"}}))
    config = get_config("efficientdet-d0", str(path))
    assert config.fpn_config == {"nodes": fpn_nodes(BIFPN_P3_P7), "weight_method": "sum"}
    config.save(tmp_path / "saved.yaml")
    assert get_config(tmp_path / "saved.yaml") == config


@pytest.mark.parametrize("fpn_config, message", [
    ({"nodes": []}, r"'fpn_config.nodes' = \[\]: expected a non-empty list"),
    ({"node": fpn_nodes(BIFPN_P3_P7)}, r"'fpn_config' = .*expected a mapping with 'nodes'"),
    ({"nodes": [{"feat_level": 3}]}, r"'fpn_config.nodes\[0\]' = .*inputs_offsets"),
    ({"nodes": fpn_nodes(BIFPN_P3_P7), "weight_method": "avg"},
     r"'fpn_config.weight_method' = 'avg': expected one of 'sum'"),
    ({"nodes": fpn_nodes(BIFPN_P3_P7[:7])}, r"no node at levels \[7\]"),
    ({"nodes": fpn_nodes(BIFPN_P3_P7 + [(8, [12])])}, r"nodes\[8\]': feat_level 8 is outside"),
    ({"nodes": fpn_nodes([(6, [3, 5])] + BIFPN_P3_P7[1:])},
     r"nodes\[0\]': inputs_offsets \[5\] name no earlier feature.*node 0 reads ids 0..4"),
])
def test_bad_fpn_config_is_refused_at_load_naming_the_node(fpn_config, message):
    with pytest.raises(ConfigError, match=message):
        get_config("efficientdet-d0", {"fpn_config": fpn_config})


B0_BLOCKS = ["r1_k3_s11_e1_i32_o16_se0.25", "r2_k3_s22_e6_i16_o24_se0.25",
             "r2_k5_s22_e6_i24_o40_se0.25", "r3_k3_s22_e6_i40_o80_se0.25",
             "r3_k5_s11_e6_i80_o112_se0.25", "r4_k5_s22_e6_i112_o192_se0.25",
             "r1_k3_s11_e6_i192_o320_se0.25"]  # official efficientnet_builder._DEFAULT_BLOCKS_ARGS


def test_backbone_config_takes_the_official_block_notation_and_fields(tmp_path):
    encoded = B0_BLOCKS[1].replace("_se", "_c0_f0_p0_se")  # as the official BlockDecoder.encode
    fields = {"num_repeat": 1, "kernel_size": 3, "strides": [1, 1], "expand_ratio": 1,
              "input_filters": 32, "output_filters": 16}
    config = get_config("efficientdet-d0", {"backbone_config": {
        "blocks": [fields, encoded, *B0_BLOCKS[2:]]}})
    assert config.backbone_config["blocks"][:2] == [
        {**fields, "strides": 1, "se_ratio": None},
        {"num_repeat": 2, "kernel_size": 3, "strides": 2, "expand_ratio": 6,
         "input_filters": 16, "output_filters": 24, "se_ratio": 0.25}]
    config.save(tmp_path / "saved.yaml")
    assert get_config(tmp_path / "saved.yaml") == config


@pytest.mark.parametrize("blocks, message", [
    (["r1_k3_s11_e1_i32_o16_noskip"] + B0_BLOCKS[1:], r"blocks\[0\]' = .*option 'noskip'"),
    (["r1_k3_s11_e1_i32_o16_cc"] + B0_BLOCKS[1:], r"unsupported option 'cc'"),
    (B0_BLOCKS[:1] + ["r2_k3_s12_e6_i16_o24"] + B0_BLOCKS[2:], r"strides \[1, 2\] differ"),
    (B0_BLOCKS[:1] + ["r2_k3_e6_i16_o24"] + B0_BLOCKS[2:], r"blocks\[1\]' = .* lacks 'strides'"),
    (B0_BLOCKS[:-2], r"strides \[1, 2, 2, 2, 1\]: the first must be 1 and exactly four 2"),
    (B0_BLOCKS[:1] + ["r0_k3_s22_e6_i16_o24"] + B0_BLOCKS[2:], r"the sizes positive"),
])
def test_bad_backbone_config_is_refused_at_load_naming_the_block(blocks, message):
    with pytest.raises(ConfigError, match=message):
        get_config("efficientdet-d0", {"backbone_config": {"blocks": blocks}})
