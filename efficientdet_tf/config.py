"""Hyper-parameters: the official recipe in `efficientdet_tf/hparams/*.yaml`, validated early,
overridable.

The YAML files ship inside the package, so an installed wheel reads the same recipe as a checkout.
`hparams/base.yaml` holds every key with the official default; `hparams/<model>.yaml` changes what
differs for one model; `hparams/demo/` holds ready-made overrides (`demo/synthetic.yaml`). The
schema below gives each key its type so that an unknown key or a value of the wrong type fails at
once, naming the key, rather than deep inside the model or the input pipeline.
"""

from __future__ import annotations

import ast
import difflib
import os
import types
from pathlib import Path
from typing import Any, Mapping

import tensorflow as tf
import yaml

from efficientdet_tf.errors import ConfigError
from efficientdet_tf.label_map import check_label_map

HPARAMS_DIR = Path(__file__).resolve().parent / "hparams"
HEADS = ("object_detection", "segmentation")  # the values of the hparam `heads`


# --- value types -------------------------------------------------------------------------------


class _Type:
    """Checks and normalizes one value; `describe` names the expected type in error messages."""

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class _Scalar(_Type):
    def __init__(self, kind: type):
        self.kind = kind

    def check(self, value):
        if self.kind is float and isinstance(value, str):
            try:
                return float(value)  # PyYAML reads "1e-4" (no dot) as a string.
            except ValueError:
                raise TypeError from None
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, self.kind):
            raise TypeError
        return value

    def describe(self):
        return self.kind.__name__


class _Optional(_Type):
    def __init__(self, inner: _Type):
        self.inner = inner

    def check(self, value):
        return None if value is None else self.inner.check(value)

    def describe(self):
        return f"{self.inner.describe()} or null"


class _ZeroIsNull(_Optional):
    """`inner` or null, where 0 is null too: the official code reads these values with `or`, so
    its default 0 (nms_configs.score_thresh) means the method's default."""

    def check(self, value):
        return None if value == 0 and not isinstance(value, bool) else super().check(value)

    def describe(self):
        return f"{super().describe()} (0: null)"


class _NullMeans(_Type):
    """`inner`, where null (the official default of some keys) stands for `value`."""

    def __init__(self, inner: _Type, value: Any):
        self.inner, self.value = inner, value

    def check(self, value):
        return self.inner.check(self.value if value is None else value)

    def describe(self):
        return f"{self.inner.describe()} (null: {self.value!r})"


class _OneOf(_Type):
    def __init__(self, *choices: str):
        self.choices = choices

    def check(self, value):
        if value not in self.choices:
            raise TypeError
        return value

    def describe(self):
        return "one of " + ", ".join(repr(c) for c in self.choices)


class _ListOf(_Type):
    """A list; on the command line also "[a,b]" of words (`[object_detection,segmentation]`)
    and the official form "1.0*2.0*0.5" (`*` separates the items)."""

    def __init__(self, inner: _Type, length: int | None = None, min_length: int = 1):
        self.inner, self.length, self.min_length = inner, length, min_length

    def check(self, value):
        if isinstance(value, str):
            value = _list_items(value)
        if not isinstance(value, (list, tuple)):
            raise TypeError
        if self.length is not None and len(value) != self.length:
            raise TypeError
        if len(value) < self.min_length:
            raise TypeError
        return [self.inner.check(v) for v in value]

    def describe(self):
        size = f"{self.length} " if self.length is not None else ""
        return f"a list of {size}{self.inner.describe()} ([a,b] or a*b)"


class _Rgb(_ListOf):
    """Three floats, one per channel; a single number (the official lite models' form) is
    the value of all three."""

    def __init__(self):
        super().__init__(FLOAT, length=3)

    def check(self, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value] * 3
        return super().check(value)


class _Heads(_ListOf):
    """The hparam `heads`: a list of head names; a single name (`heads=segmentation`) is a list
    of one. Emptiness and repeats are checked with the other rules (`_check_heads`)."""

    def __init__(self):
        super().__init__(_OneOf(*HEADS), min_length=0)

    def check(self, value):
        if isinstance(value, str):
            value = _list_items(value)
        return super().check([value] if isinstance(value, str) else value)


def _list_items(text: str) -> list | str:
    """The items of a list written on the command line, "[a,b]" (words need no quotes) or
    "a*b"; other text unchanged. Only list-valued keys read their value so: a regex keeps its
    brackets and `*`."""
    if text.startswith("[") and text.endswith("]"):
        return [_parse_value(item) for item in _split_top_level(text[1:-1])]
    if "*" in text:
        return [_parse_value(item.strip()) for item in text.split("*")]
    return text


class _ImageSize(_Type):
    """An int, [height, width], or the official "WxH" string; stored as (height, width)."""

    def check(self, value):
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            size = (value, value)
        elif isinstance(value, str) and "x" in value.lower():
            width, height = (int(v) for v in value.lower().split("x"))
            size = (height, width)
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            size = tuple(int(v) for v in value)
        else:
            raise TypeError
        if min(size) <= 0:
            raise TypeError
        return size

    def describe(self):
        return 'an int, [height, width] or "WxH"'


class _LabelMap(_Type):
    """A label map spec ('coco', a file path, see `efficientdet_tf.label_map`) or the {id: name}
    mapping itself (as a training run records the classes it found); the mapping is stored
    read-only."""

    def check(self, value):
        if isinstance(value, str):
            return value
        if not isinstance(value, Mapping):
            raise TypeError
        try:
            return types.MappingProxyType(check_label_map(value, "hparam 'label_map'"))
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def describe(self):
        return "a label map name or file, or a mapping {class id: name}"


class _Refused(ValueError):
    """A value of the right type that this library does not honour; the message says why."""


class _OfficialDefaultOnly(_Type):
    """An official hparam that has no job here (or whose job a flag does): its official default
    is accepted, so that official config files load; any other value is refused with `why`,
    which names what to use instead."""

    def __init__(self, default: Any, why: str):
        self.default, self.why = default, why

    def check(self, value):
        if value != self.default:
            raise _Refused(self.why)
        return value

    def describe(self):
        return f"only {self.default!r}"


class _FpnConfig(_Type):
    """The official `fpn_config`: a feature-network topology as data,
    {nodes: [{feat_level: int, inputs_offsets: [int, ...]}, ...], weight_method: str}.

    Feature ids (`inputs_offsets`) count the cell's inputs, levels min..max, then each node in
    order, as in `model.fpn_topology`; `weight_method` may be left out (fpn_weight_method then).
    The ids and levels are checked against min_level / max_level with the other joint rules.
    """

    def check(self, value):
        if not isinstance(value, Mapping) or set(value) - {"nodes", "weight_method"}:
            raise ConfigError(
                f"hparam 'fpn_config' = {value!r}: expected a mapping with 'nodes' (a list of "
                "{feat_level: int, inputs_offsets: [int, ...]}) and optionally 'weight_method'.")
        nodes = value.get("nodes")
        if not isinstance(nodes, (list, tuple)) or not nodes:
            raise ConfigError(f"hparam 'fpn_config.nodes' = {nodes!r}: expected a non-empty list "
                              "of {feat_level: int, inputs_offsets: [int, ...]}.")
        checked = {"nodes": [self._node(index, node) for index, node in enumerate(nodes)]}
        if value.get("weight_method") is not None:
            method = _DECLARED_TYPES["fpn_weight_method"]
            try:
                checked["weight_method"] = method.check(value["weight_method"])
            except TypeError:
                raise ConfigError(
                    f"hparam 'fpn_config.weight_method' = {value['weight_method']!r}: expected "
                    f"{method.describe()}.") from None
        return checked

    @staticmethod
    def _node(index: int, node) -> dict:
        ints = isinstance(node, Mapping) and set(node) == {"feat_level", "inputs_offsets"} and (
            _is_int(node["feat_level"]) and isinstance(node["inputs_offsets"], (list, tuple))
            and node["inputs_offsets"] and all(_is_int(i) for i in node["inputs_offsets"]))
        if not ints:
            raise ConfigError(
                f"hparam 'fpn_config.nodes[{index}]' = {node!r}: expected "
                "{feat_level: int, inputs_offsets: [int, ...]} (at least one input).")
        return {"feat_level": node["feat_level"], "inputs_offsets": list(node["inputs_offsets"])}

    def describe(self):
        return "a mapping {nodes: [{feat_level, inputs_offsets}, ...], weight_method} or null"


class _BackboneConfig(_Type):
    """The official `backbone_config`: {blocks: [...]}, the EfficientNet stages that replace the
    B0 stages before backbone_name's compound scaling. A block is the official string notation
    ('r1_k3_s11_e1_i32_o16_se0.25': repeats, kernel, strides, expand ratio, input and output
    filters, squeeze-excite ratio) or a mapping of those BlockArgs fields; stored as mappings.
    The official options conv_type, fused_conv, super_pixel, condconv and noskip are refused.
    """

    _FIELDS = {"r": "num_repeat", "k": "kernel_size", "e": "expand_ratio",
               "i": "input_filters", "o": "output_filters"}

    def check(self, value):
        blocks = value.get("blocks") if isinstance(value, Mapping) else None
        if set(value) != {"blocks"} or not isinstance(blocks, (list, tuple)) or not blocks:
            raise ConfigError(
                f"hparam 'backbone_config' = {value!r}: expected {{blocks: [...]}}, a list of "
                "blocks such as 'r1_k3_s11_e1_i32_o16_se0.25' (null: backbone_name's).")
        checked = [self._block(index, block) for index, block in enumerate(blocks)]
        strides = [block["strides"] for block in checked]
        if strides[0] != 1 or strides.count(2) != 4:
            raise ConfigError(
                f"hparam 'backbone_config.blocks' have strides {strides}: the first must be 1 "
                "and exactly four 2, for the backbone's levels 1-5 (strides 2-32 with the stem).")
        return {"blocks": checked}

    def _block(self, index: int, block) -> dict:
        try:
            fields = self._parse(block) if isinstance(block, str) else dict(block)
            strides = fields["strides"]
            if isinstance(strides, (list, tuple)):
                if len(set(strides)) != 1:
                    raise ValueError(f"strides {strides} differ; only equal strides are built")
                fields["strides"] = strides[0]
            checked = {name: int(fields.pop(name)) for name in (*self._FIELDS.values(), "strides")}
            checked["se_ratio"] = fields.pop("se_ratio", None)
            if fields:
                raise ValueError(f"unsupported fields {sorted(fields)}")
        except KeyError as error:
            raise ConfigError(f"hparam 'backbone_config.blocks[{index}]' = {block!r} lacks "
                              f"{error}.") from None
        except (TypeError, ValueError) as error:
            raise ConfigError(
                f"hparam 'backbone_config.blocks[{index}]' = {block!r}: {error}. Expected "
                "'r<repeats>_k<kernel>_s<stride><stride>_e<expand>_i<in>_o<out>[_se<ratio>]' "
                "or those fields (num_repeat, kernel_size, strides, expand_ratio, "
                "input_filters, output_filters, se_ratio).") from None
        se_ratio = checked["se_ratio"]
        if (checked["strides"] not in (1, 2) or min(checked[f] for f in self._FIELDS.values()) < 1
                or not (se_ratio is None or 0 < se_ratio <= 1)):
            raise ConfigError(f"hparam 'backbone_config.blocks[{index}]' = {block!r}: strides "
                              "must be 1 or 2, the sizes positive, se_ratio in (0, 1] or null.")
        return checked

    def _parse(self, text: str) -> dict:
        fields = {}
        for option in text.split("_"):
            key, number = option.rstrip("0123456789."), option.lstrip("abcdefghijklmnopqrstuvwxyz")
            if key in self._FIELDS:
                fields[self._FIELDS[key]] = int(number)
            elif key == "s" and len(number) == 2:
                fields["strides"] = [int(number[0]), int(number[1])]
            elif key == "se":
                fields["se_ratio"] = float(number)
            elif not (key in ("c", "f", "p") and number == "0"):  # the official encoder's zeros
                raise ValueError(f"unsupported option {option!r}")
        return fields

    def describe(self):
        return "{blocks: [...]} or null"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


INT, FLOAT, BOOL, STR = _Scalar(int), _Scalar(float), _Scalar(bool), _Scalar(str)

# The types that a key's default in base.yaml does not tell: a choice among names, a value that
# may be null, an image size, a list of fixed length, a label map. Every other key of base.yaml
# takes the type of its default (so base.yaml writes floats with a dot), and base.yaml alone says
# which keys exist.
_DECLARED_TYPES: dict[str, Any] = {
    "backbone_name": _OneOf(
        *(f"efficientnet-b{i}" for i in range(8)), *(f"efficientnet-lite{i}" for i in range(5))
    ),
    "backbone_survival_prob": _Optional(FLOAT),
    "act_type": _OneOf("swish", "silu", "relu", "relu6", "hswish", "gelu", "mish"),
    "image_size": _ImageSize(),
    "heads": _Heads(),
    "fpn_name": _NullMeans(_OneOf("bifpn", "bifpn_dyn", "qufpn", "fpn", "panet"), "bifpn"),
    "fpn_weight_method": _NullMeans(
        _OneOf("sum", "attn", "fastattn", "channel_attn", "channel_fastattn"), "fastattn"),
    "survival_prob": _Optional(FLOAT),
    "mean_rgb": _Rgb(),
    "stddev_rgb": _Rgb(),
    "label_map": _Optional(_LabelMap()),
    "autoaugment_policy": _Optional(_OneOf("v0", "randaug")),
    "iou_loss_type": _Optional(_OneOf("iou", "giou", "diou", "ciou")),
    "optimizer": _OneOf("sgd", "adam"),
    "lr_decay_method": _OneOf("cosine", "cosine_after_warmup", "stepwise", "polynomial"),
    "var_freeze_expr": _Optional(STR),
    "nms_configs": {
        "method": _OneOf("gaussian", "hard"),
        "iou_thresh": _ZeroIsNull(FLOAT),
        "score_thresh": _ZeroIsNull(FLOAT),
        "sigma": _ZeroIsNull(FLOAT),
        "pyfunc": _OfficialDefaultOnly(
            False, "NMS runs in the TensorFlow graph here (the official numpy py_function NMS "
                   "is not ported); remove the key."),
    },
    # Official keys implemented here.
    "fpn_config": _Optional(_FpnConfig()),
    "backbone_config": _Optional(_BackboneConfig()),
    "target_size": _Optional(_ImageSize()),
    "positives_momentum": _Optional(FLOAT),
    "loss_scale": _Optional(FLOAT),
    "img_summary_steps": _Optional(INT),
    "sample_image": _Optional(STR),
    # Official keys that have no job here: the official default only.
    "data_format": _OfficialDefaultOnly(
        "channels_last", "the networks are channels_last only (TensorFlow picks the fastest "
                         "GPU layout itself); remove the key."),
    "strategy": _OfficialDefaultOnly(
        None, "the distribution strategy is the flag --strategy (default, gpus, multi-worker, "
              "tpu), or build ObjectDetector inside strategy.scope()."),
    "is_training_bn": _OfficialDefaultOnly(
        True, "batch norm follows Keras's training flag (it trains in fit, runs in inference "
              "mode elsewhere); remove the key."),
    "use_keras_model": _OfficialDefaultOnly(
        True, "the official legacy (TF1 estimator) model is not ported; the Keras model is the "
              "only one. Remove the key."),
    "ckpt_var_scope": _OfficialDefaultOnly(
        None, "checkpoints load by the official variable names; start from a part of one with "
              "--backbone_ckpt (or --pretrained_ckpt and var_freeze_expr)."),
    "dataset_type": _OfficialDefaultOnly(
        None, "the data is TFRecord files or another dataset spec of --train_file_pattern (the "
              "official 'sstable' reader is Google-internal); remove the key."),
    "save_freq": _OfficialDefaultOnly(
        "epoch", "checkpoints are saved at every epoch end; add --save_checkpoints_steps=N "
                 "(TrainingCheckpoints(save_checkpoints_steps=N)) to save every N steps too."),
    "verbose": _OfficialDefaultOnly(
        1, "checkpoint saving is logged through Python logging; set the log level (absl "
           "--verbosity) instead."),
}
_TYPE_OF_DEFAULT = {bool: BOOL, int: INT, float: FLOAT, str: STR}


def _schema(defaults: Mapping[str, Any], declared: Mapping[str, Any], prefix: str = "") -> dict:
    """{key: type} of every key of `defaults` (nested for groups): declared, else its default's."""
    unknown = [prefix + key for key in declared if key not in defaults]
    if unknown:
        raise ConfigError(f"Types are declared for {unknown}, which base.yaml lacks.")
    schema = {}
    for key, default in defaults.items():
        if isinstance(default, Mapping):
            schema[key] = _schema(default, declared.get(key, {}), prefix + key + ".")
        elif key in declared:
            schema[key] = declared[key]
        elif isinstance(default, list) and default:
            schema[key] = _ListOf(_TYPE_OF_DEFAULT[type(default[0])])
        elif type(default) in _TYPE_OF_DEFAULT:
            schema[key] = _TYPE_OF_DEFAULT[type(default)]
        else:
            raise ConfigError(f"hparam {prefix + key!r} = {default!r} in base.yaml: declare its "
                              "type in config._DECLARED_TYPES.")
    return schema


SCHEMA: dict[str, Any] = _schema(
    yaml.safe_load((HPARAMS_DIR / "base.yaml").read_text()), _DECLARED_TYPES)


# --- the config object -------------------------------------------------------------------------


class Config:
    """Validated hyper-parameters with attribute access (`config.nms_configs.method`).

    Read-only: derive a changed copy with `config.override(...)`, so that a model built from a
    config always matches what `as_dict()` / `save()` report.
    """

    def __init__(self, values: Mapping[str, Any], schema: Mapping = SCHEMA):
        groups = {key for key, kind in schema.items() if isinstance(kind, dict)}
        object.__setattr__(
            self,
            "_values",
            {k: Config(v, schema[k]) if k in groups else v for k, v in values.items()},
        )

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(_unknown_key_message(key, self._values)) from None

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setattr__(self, key, value):
        raise AttributeError(
            f"Config is read-only; use config.override({{'{key}': ...}}) to get a changed copy."
        )

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def __eq__(self, other):
        return isinstance(other, Config) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return f"Config({self.as_dict()!r})"

    def keys(self):
        return self._values.keys()

    def as_dict(self) -> dict[str, Any]:
        """Plain nested dict of YAML-friendly values (tuples become lists)."""
        return {k: _plain(v) for k, v in self._values.items()}

    def override(self, overrides: str | Mapping[str, Any] | os.PathLike | None) -> "Config":
        """A validated copy with `overrides` applied (see `parse_overrides`)."""
        merged = self.as_dict()
        _merge(merged, parse_overrides(overrides), SCHEMA, prefix="")
        return Config(validate(merged))

    def save(self, path: str | os.PathLike) -> None:
        """Writes the full config as YAML (local or GCS path); `get_config(path)` reads it back."""
        tf.io.gfile.makedirs(os.path.dirname(str(path)) or ".")
        with tf.io.gfile.GFile(str(path), "w") as file:
            file.write(yaml.safe_dump(self.as_dict(), sort_keys=False))


def _plain(value):
    if isinstance(value, Config):
        return value.as_dict()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --- loading and overriding --------------------------------------------------------------------


def available_models() -> list[str]:
    """Model names with a file in `hparams/`."""
    return sorted(p.stem for p in HPARAMS_DIR.glob("*.yaml") if p.stem != "base")


def get_config(
    model_name: str | os.PathLike = "efficientdet-d0",
    overrides: str | Mapping[str, Any] | os.PathLike | None = None,
) -> Config:
    """The official config of `model_name` (or of a saved config YAML file), with `overrides`.

    `overrides` is a string `key=value,nested.key=value,list_key=[1.0,2.0]` (the official forms
    `list_key=1.0*2.0` and `image_size=WxH` too), a path to a YAML file, or a dict; every key must
    already exist.
    """
    values = _read_yaml(HPARAMS_DIR / "base.yaml")
    _merge(values, _model_values(model_name), SCHEMA, prefix="")
    config = Config(validate(values))
    return config.override(overrides) if overrides else config


def _model_values(model_name: str | os.PathLike) -> dict[str, Any]:
    if str(model_name).endswith((".yaml", ".yml")):
        return _read_yaml(_yaml_file(model_name, "Config file"))
    model_file = HPARAMS_DIR / f"{model_name}.yaml"
    if not model_file.is_file():
        close = difflib.get_close_matches(str(model_name), available_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown model name {str(model_name)!r}.{hint} "
            f"Known models: {', '.join(available_models())}."
        )
    return _read_yaml(model_file)


def _yaml_file(path: str | os.PathLike, what: str) -> str:
    """`path` itself when it exists, else the file of that name shipped in the package's hparams
    folder (`demo/synthetic.yaml`), so that packaged files work from any directory."""
    path = str(path)
    if tf.io.gfile.exists(path):
        return path
    packaged = HPARAMS_DIR / path
    if not os.path.isabs(path) and packaged.is_file():
        return str(packaged)
    shipped = sorted(str(p.relative_to(HPARAMS_DIR)) for p in HPARAMS_DIR.glob("*/*.yaml"))
    raise ConfigError(
        f"{what} {path!r} does not exist, neither as a path nor among the files shipped with "
        f"efficientdet_tf ({', '.join(shipped)})."
    )


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with tf.io.gfile.GFile(str(path)) as file:
            values = yaml.safe_load(file.read())
    except yaml.YAMLError as error:
        raise ConfigError(f"Cannot parse YAML file {str(path)!r}: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"YAML file {str(path)!r} must hold a mapping of hparams, not {values!r}.")
    return values


def parse_overrides(overrides: str | Mapping[str, Any] | os.PathLike | None) -> dict[str, Any]:
    """Turns an override string, a YAML file path or a dict into a nested dict."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return _nest(dict(overrides))
    text = str(overrides).strip()
    if text.endswith((".yaml", ".yml")) and "=" not in text:
        return _read_yaml(_yaml_file(text, "Hparams file"))
    if "=" not in text:
        raise ConfigError(
            f"Invalid hparams {text!r}: give key=value pairs separated by commas "
            "(e.g. 'num_classes=3,nms_configs.method=hard') or a path to a .yaml file."
        )
    pairs = {}
    for item in _split_top_level(text):
        if "=" not in item:
            raise ConfigError(f"Invalid hparams item {item!r} in {text!r}: expected key=value.")
        key, raw = item.split("=", 1)
        pairs[key.strip()] = _parse_value(raw.strip())
    return _nest(pairs)


def _split_top_level(text: str) -> list[str]:
    """Splits at commas outside brackets, so `aspect_ratios=[1.0,2.0]` stays whole."""
    items, depth, current = [], 0, []
    for char in text:
        depth += char in "[(" and 1 or char in "])" and -1 or 0
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _parse_value(raw: str) -> Any:
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = str(key).split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = _nest(value) if isinstance(value, dict) else value
    return nested


def _merge(target: dict, updates: Mapping, schema: Mapping, prefix: str) -> None:
    """Recursively applies `updates` to `target`, refusing keys the schema does not know."""
    for key, value in updates.items():
        if key not in schema:
            raise ConfigError(_unknown_key_message(prefix + key, _flat_keys(SCHEMA)))
        if isinstance(schema[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"hparam {prefix + key!r} is a group of keys "
                    f"({', '.join(schema[key])}); set them as {prefix + key}.<key>=value."
                )
            _merge(target.setdefault(key, {}), value, schema[key], prefix + key + ".")
        else:
            target[key] = value


def _flat_keys(schema: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for key, value in schema.items():
        if isinstance(value, dict):
            keys += _flat_keys(value, prefix + key + ".")
        else:
            keys.append(prefix + key)
    return keys


def _unknown_key_message(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    hint = f" Closest known keys: {', '.join(close)}." if close else ""
    return f"Unknown hparam {key!r}.{hint} See efficientdet_tf/hparams/base.yaml for every key."


# --- validation --------------------------------------------------------------------------------


def validate(values: Mapping[str, Any], schema: Mapping = SCHEMA, prefix: str = "") -> dict:
    """Type-checks and normalizes every value; then checks the rules that join several keys."""
    missing = [prefix + k for k in schema if k not in values]
    if missing:
        raise ConfigError(f"Config lacks hparams {', '.join(missing)}.")
    checked = {}
    for key, kind in schema.items():
        value = values[key]
        if isinstance(kind, dict):
            checked[key] = validate(value, kind, prefix + key + ".")
            continue
        try:
            checked[key] = kind.check(value)
        except ConfigError:
            raise
        except _Refused as error:
            raise ConfigError(
                f"hparam {prefix + key!r} = {value!r} is not supported: {error}") from None
        except (TypeError, ValueError):
            raise ConfigError(
                f"hparam {prefix + key!r} = {value!r} has the wrong type: "
                f"expected {kind.describe()}."
            ) from None
    if not prefix:
        _check_relations(checked)
    return checked


def _check_relations(values: dict[str, Any]) -> None:
    positive = (
        "num_classes", "num_scales", "fpn_num_filters", "fpn_cell_repeats",
        "box_class_repeats", "max_instances_per_image",
    )
    for key in positive:
        if values[key] < 1:
            raise ConfigError(f"hparam {key!r} = {values[key]} must be at least 1.")
    if not 1 <= values["min_level"] <= min(values["max_level"], 5):
        raise ConfigError(
            f"hparams min_level={values['min_level']}, max_level={values['max_level']}: need "
            "1 <= min_level <= 5 (the backbone's deepest level) and min_level <= max_level."
        )
    if values["jitter_min"] > values["jitter_max"]:
        raise ConfigError(
            f"hparam jitter_min={values['jitter_min']} exceeds jitter_max={values['jitter_max']}."
        )
    _check_heads(values)
    label_map = values["label_map"]
    if isinstance(label_map, Mapping) and max(label_map, default=0) > values["num_classes"]:
        raise ConfigError(
            f"hparam 'label_map' has class ids up to {max(label_map)} but num_classes is "
            f"{values['num_classes']}; set num_classes={max(label_map)}."
        )
    for key in ("backbone_survival_prob", "survival_prob"):
        if values[key] is not None and not 0.0 < values[key] <= 1.0:
            raise ConfigError(f"hparam {key!r} = {values[key]} must be in (0, 1] or null.")
    _check_official_extras(values)
    if values["fpn_config"] is not None:
        _check_fpn_config(values["fpn_config"], values["min_level"], values["max_level"])


def _check_official_extras(values: dict[str, Any]) -> None:
    momentum = values["positives_momentum"]
    if momentum is not None and momentum >= 1.0:
        raise ConfigError(
            f"hparam 'positives_momentum' = {momentum} must be below 1 (0 < m < 1: a moving "
            "average of the positives; null, 0 or negative: the batch's own positives).")
    if values["loss_scale"] is not None and values["loss_scale"] <= 0:
        raise ConfigError(f"hparam 'loss_scale' = {values['loss_scale']} must be positive or "
                          "null (the initial float16 loss scale; null: Keras's 2**15).")
    steps = values["img_summary_steps"]
    if steps is not None and steps < 1:
        raise ConfigError(f"hparam 'img_summary_steps' = {steps} must be at least 1 or null.")


def _check_fpn_config(fpn_config: Mapping, min_level: int, max_level: int) -> None:
    """Every node's level is within min..max_level and reads only features before it; every
    level has a node (its output, as the official code takes)."""
    num_levels = max_level - min_level + 1
    missing = sorted(set(range(min_level, max_level + 1))
                     - {node["feat_level"] for node in fpn_config["nodes"]})
    if missing:
        raise ConfigError(
            f"hparam 'fpn_config' has no node at levels {missing}: each level min_level.."
            f"max_level = {min_level}..{max_level} needs one, its last node being the output.")
    for index, node in enumerate(fpn_config["nodes"]):
        if not min_level <= node["feat_level"] <= max_level:
            raise ConfigError(
                f"hparam 'fpn_config.nodes[{index}]': feat_level {node['feat_level']} is outside "
                f"min_level..max_level = {min_level}..{max_level}.")
        known = num_levels + index
        bad = [offset for offset in node["inputs_offsets"] if not 0 <= offset < known]
        if bad:
            raise ConfigError(
                f"hparam 'fpn_config.nodes[{index}]': inputs_offsets {bad} name no earlier "
                f"feature; ids 0..{num_levels - 1} are the inputs at levels "
                f"{min_level}..{max_level}, id {num_levels} + i is node i, so node {index} "
                f"reads ids 0..{known - 1}.")


def _check_heads(values: dict[str, Any]) -> None:
    heads = values["heads"]
    if not heads or len(set(heads)) != len(heads):
        raise ConfigError(
            f"hparam 'heads' = {heads}: name each head once, at least one of {', '.join(HEADS)} "
            "(e.g. heads=object_detection*segmentation)."
        )
    if "segmentation" not in heads:
        return
    if values["seg_num_classes"] < 2:
        raise ConfigError(
            f"hparam 'seg_num_classes' = {values['seg_num_classes']} must be at least 2 (the "
            "background counts as a class)."
        )
    stride = 2 ** values["max_level"]
    if any(side % stride for side in values["image_size"]):
        raise ConfigError(
            f"hparam image_size={list(values['image_size'])} with the segmentation head: each side "
            f"must be a multiple of 2**max_level = {stride}, for the head doubles each level back "
            "to the one below."
        )
