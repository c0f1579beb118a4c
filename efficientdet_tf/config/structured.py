"""The two official hparams whose value is a structure: `fpn_config` (a feature-network
topology) and `backbone_config` (EfficientNet stages). Their errors name the part at fault
(`fpn_config.nodes[2]`), so these types raise `ConfigError` themselves."""

from __future__ import annotations

from typing import Mapping

from efficientdet_tf.config.types import Invalid, ValueType, is_int
from efficientdet_tf.errors import ConfigError


class FpnConfig(ValueType):
    """The official `fpn_config`: a feature-network topology as data,
    {nodes: [{feat_level: int, inputs_offsets: [int, ...]}, ...], weight_method: str}.

    Feature ids (`inputs_offsets`) count the cell's inputs, levels min..max, then each node in
    order, as in `model.fpn_topology`; `weight_method` may be left out (fpn_weight_method then).
    The ids and levels are checked against min_level / max_level with the other joint rules.
    """

    def __init__(self, weight_method: ValueType):
        self.weight_method = weight_method

    def convert(self, value):
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
            try:
                checked["weight_method"] = self.weight_method.check(value["weight_method"])
            except Invalid:
                raise ConfigError(
                    f"hparam 'fpn_config.weight_method' = {value['weight_method']!r}: expected "
                    f"{self.weight_method.describe()}.") from None
        return checked

    @staticmethod
    def _node(index: int, node) -> dict:
        ints = isinstance(node, Mapping) and set(node) == {"feat_level", "inputs_offsets"} and (
            is_int(node["feat_level"]) and isinstance(node["inputs_offsets"], (list, tuple))
            and node["inputs_offsets"] and all(is_int(i) for i in node["inputs_offsets"]))
        if not ints:
            raise ConfigError(
                f"hparam 'fpn_config.nodes[{index}]' = {node!r}: expected "
                "{feat_level: int, inputs_offsets: [int, ...]} (at least one input).")
        return {"feat_level": node["feat_level"], "inputs_offsets": list(node["inputs_offsets"])}

    def describe(self):
        return "a mapping {nodes: [{feat_level, inputs_offsets}, ...], weight_method} or null"


class BackboneConfig(ValueType):
    """The official `backbone_config`: {blocks: [...]}, the EfficientNet stages that replace the
    B0 stages before backbone_name's compound scaling. A block is the official string notation
    ('r1_k3_s11_e1_i32_o16_se0.25': repeats, kernel, strides, expand ratio, input and output
    filters, squeeze-excite ratio) or a mapping of those BlockArgs fields; stored as mappings.
    The official options conv_type, fused_conv, super_pixel, condconv and noskip are refused.
    """

    _FIELDS = {"r": "num_repeat", "k": "kernel_size", "e": "expand_ratio",
               "i": "input_filters", "o": "output_filters"}

    def convert(self, value):
        blocks = value.get("blocks") if isinstance(value, Mapping) else None
        if not isinstance(blocks, (list, tuple)) or not blocks or set(value) != {"blocks"}:
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
            checked = {name: _whole(fields.pop(name))
                       for name in (*self._FIELDS.values(), "strides")}
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
        se_ok = se_ratio is None or (isinstance(se_ratio, (int, float)) and 0 < se_ratio <= 1)
        if (checked["strides"] not in (1, 2) or min(checked[f] for f in self._FIELDS.values()) < 1
                or not se_ok):
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


def _whole(number) -> int:
    """An int field of a block; a float or text would be cut silently by int()."""
    if not is_int(number):
        raise TypeError(f"{number!r} is not an int")
    return number
