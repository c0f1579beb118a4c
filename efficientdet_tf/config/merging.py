"""Applying override values to a config's values, key by key of the schema, and naming the
closest known keys when a key is unknown."""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping

from efficientdet_tf.errors import ConfigError


def merge(target: dict, updates: Mapping, schema: Mapping, prefix: str = "") -> None:
    """Recursively applies `updates` to `target`, refusing keys the schema does not know."""
    for key, value in updates.items():
        name = f"{prefix}{key}"
        if key not in schema:
            raise ConfigError(unknown_key_message(name, flat_keys(schema, prefix)))
        if isinstance(schema[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"hparam {name!r} is a group of keys ({', '.join(schema[key])}); set them "
                    f"as {name}.<key>=value.")
            merge(target.setdefault(key, {}), value, schema[key], name + ".")
        else:
            target[key] = value


def flat_keys(schema: Mapping, prefix: str = "") -> list[str]:
    """Every key's dotted name: `nms_configs.method`."""
    keys = []
    for key, value in schema.items():
        if isinstance(value, dict):
            keys += flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


def unknown_key_message(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    hint = f" Closest known keys: {', '.join(close)}." if close else ""
    return f"Unknown hparam {key!r}.{hint} See efficientdet_tf/hparams/base.yaml for every key."
