"""Validation: each value checked by its type (range included), then the rules that join
several keys. Every refusal is a one-line `ConfigError` naming the key, the value and what is
expected."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from efficientdet_tf.config.merging import flat_keys, unknown_key_message
from efficientdet_tf.config.schema import HEADS, schema
from efficientdet_tf.config.types import Invalid
from efficientdet_tf.errors import ConfigError


def validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """The checked, normalized values of a full config (nested dicts for groups)."""
    checked = _check_values(values, schema(), prefix="")
    for rule in JOINT_RULES:
        rule(checked)
    return checked


def shown(value: Any) -> str:
    """repr(value) cut to 80 characters, so that a message stays one readable line."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's 4300-digit limit of int to str
        return "a huge int"
    return text if len(text) <= 80 else text[:76] + " ..."


def _check_values(values: Mapping, group: Mapping, prefix: str) -> dict[str, Any]:
    unknown = [key for key in values if key not in group]
    if unknown:
        raise ConfigError(unknown_key_message(f"{prefix}{unknown[0]}", flat_keys(group, prefix)))
    missing = [prefix + key for key in group if key not in values]
    if missing:
        raise ConfigError(f"Config lacks hparams {', '.join(missing)}.")
    checked = {}
    for key, kind in group.items():
        value, name = values[key], prefix + key
        if isinstance(kind, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"hparam {name!r} = {shown(value)} must be a group of keys "
                                  f"({', '.join(kind)}).")
            checked[key] = _check_values(value, kind, name + ".")
            continue
        try:
            checked[key] = kind.check(value)
        except Invalid as error:
            raise ConfigError(f"hparam {name!r} = {shown(value)} {error}") from None
    return checked


# --- the rules that join several keys; each takes the checked values -------------------------


def _levels(values: dict[str, Any]) -> None:
    if values["max_level"] <= values["min_level"]:
        raise ConfigError(
            f"hparams min_level={values['min_level']}, max_level={values['max_level']}: "
            "max_level must be above min_level (1 <= min_level <= 5, the backbone's deepest).")


def _image_size(values: dict[str, Any]) -> None:
    """The finest feature level has at least 2x2 positions."""
    smallest = 2 ** (values["min_level"] + 1)
    if min(values["image_size"]) < smallest:
        raise ConfigError(
            f"hparam image_size={list(values['image_size'])} is too small for min_level="
            f"{values['min_level']}: each side must be at least 2**(min_level + 1) = {smallest}, "
            "for 2x2 positions at the finest feature level.")


def _jitter(values: dict[str, Any]) -> None:
    if values["jitter_min"] > values["jitter_max"]:
        raise ConfigError(
            f"hparam jitter_min={values['jitter_min']} exceeds jitter_max={values['jitter_max']}.")


def _heads(values: dict[str, Any]) -> None:
    heads = values["heads"]
    if not heads or len(set(heads)) != len(heads):
        raise ConfigError(
            f"hparam 'heads' = {heads}: name each head once, at least one of {', '.join(HEADS)} "
            "(e.g. heads=object_detection*segmentation).")
    stride = 2 ** values["max_level"]
    if "segmentation" in heads and any(side % stride for side in values["image_size"]):
        raise ConfigError(
            f"hparam image_size={shown(list(values['image_size']))} with the segmentation head: "
            f"each side must be a multiple of 2**max_level = {stride}, for the head doubles each "
            "level back to the one below.")


def _label_map(values: dict[str, Any]) -> None:
    label_map = values["label_map"]
    if isinstance(label_map, Mapping) and max(label_map, default=0) > values["num_classes"]:
        raise ConfigError(
            f"hparam 'label_map' has class ids up to {max(label_map)} but num_classes is "
            f"{values['num_classes']}; set num_classes={max(label_map)}.")


def _fpn_config(values: dict[str, Any]) -> None:
    """Every node's level is within min..max_level and reads only features before it; every
    level has a node (its output, as the official code takes)."""
    fpn_config, min_level, max_level = (values[k] for k in ("fpn_config", "min_level",
                                                            "max_level"))
    if fpn_config is None:
        return
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
                f"hparam 'fpn_config.nodes[{index}]': feat_level {shown(node['feat_level'])} is "
                f"outside min_level..max_level = {min_level}..{max_level}.")
        known = num_levels + index
        bad = [offset for offset in node["inputs_offsets"] if not 0 <= offset < known]
        if bad:
            raise ConfigError(
                f"hparam 'fpn_config.nodes[{index}]': inputs_offsets {shown(bad)} name no "
                f"earlier feature; ids 0..{num_levels - 1} are the inputs at levels "
                f"{min_level}..{max_level}, id {num_levels} + i is node i, so node {index} "
                f"reads ids 0..{known - 1}.")


# In this order: the levels before the image size and the feature network that use them.
JOINT_RULES: tuple[Callable[[dict[str, Any]], None], ...] = (
    _levels, _image_size, _jitter, _heads, _label_map, _fpn_config)
