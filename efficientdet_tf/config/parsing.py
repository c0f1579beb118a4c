"""Override strings: `key=value,nested.key=value,list_key=[1.0,2.0]`, the official forms
`list_key=1.0*2.0` and `image_size=WxH`, a YAML file's path, or a dict; all become a nested dict
of raw values, which the schema's types then check."""

from __future__ import annotations

import ast
import os
from typing import Any, Mapping

from efficientdet_tf.config.files import find_yaml, read_yaml
from efficientdet_tf.errors import ConfigError

Overrides = str | Mapping[str, Any] | os.PathLike | None


def parse_overrides(overrides: Overrides) -> dict[str, Any]:
    """Turns an override string, a YAML file path or a dict into a nested dict."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return nest(dict(overrides))
    text = str(overrides).strip()
    if text.endswith((".yaml", ".yml")) and "=" not in text:
        return read_yaml(find_yaml(text, "Hparams file"))
    if "=" not in text:
        raise ConfigError(
            f"Invalid hparams {text!r}: give key=value pairs separated by commas "
            "(e.g. 'num_classes=3,nms_configs.method=hard') or a path to a .yaml file."
        )
    pairs = {}
    for item in split_top_level(text):
        if "=" not in item:
            raise ConfigError(f"Invalid hparams item {item!r} in {text!r}: expected key=value.")
        key, raw = item.split("=", 1)
        pairs[key.strip()] = parse_value(raw.strip())
    return nest(pairs)


def split_top_level(text: str) -> list[str]:
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


def parse_value(raw: str) -> Any:
    """A Python literal, true/false/null in any case, else the text itself."""
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return raw


def list_items(text: str) -> list | str:
    """The items of a list written on the command line, "[a,b]" (words need no quotes) or
    "a*b"; other text unchanged. Only list-valued keys read their value so: a regex keeps its
    brackets and `*`."""
    if text.startswith("[") and text.endswith("]"):
        return [parse_value(item) for item in split_top_level(text[1:-1])]
    if "*" in text:
        return [parse_value(item.strip()) for item in text.split("*")]
    return text


def nest(flat: Mapping) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = str(key).split(".")
        node = nested
        for depth, parent in enumerate(parents):
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ConfigError(f"hparam {'.'.join(parents[:depth + 1])!r} is given both a "
                                  f"value and keys under it ({key!r}); give one or the other.")
        if leaf in node and isinstance(node[leaf], dict):
            raise ConfigError(f"hparam {key!r} is given both a value and keys under it; give "
                              "one or the other.")
        node[leaf] = nest(value) if isinstance(value, Mapping) else value
    return nested
