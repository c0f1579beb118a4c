"""`Config`: hparams validated on construction, read-only, with attribute access."""

from __future__ import annotations

import os
from typing import Any, Mapping

from efficientdet_tf.config.files import write_yaml
from efficientdet_tf.config.merging import merge, unknown_key_message
from efficientdet_tf.config.parsing import Overrides, parse_overrides
from efficientdet_tf.config.schema import schema
from efficientdet_tf.config.validation import validate


class Config:
    """Hyper-parameters with attribute access (`config.nms_configs.method`).

    `Config(values)` takes every key of the schema and validates them (types, ranges, the rules
    that join keys), raising `ConfigError` otherwise: a `Config` is valid from construction.
    Read-only: derive a changed copy with `config.override(...)`, so that a model built from a
    config always matches what `as_dict()` / `save()` report.
    """

    def __init__(self, values: Mapping[str, Any]):
        self._keep(validate(values), schema())

    @classmethod
    def _of_checked(cls, checked: dict[str, Any], group: Mapping) -> "Config":
        """A group of values that the whole config's validation has already checked."""
        config = cls.__new__(cls)
        config._keep(checked, group)
        return config

    def _keep(self, checked: dict[str, Any], group: Mapping) -> None:
        values = {key: Config._of_checked(value, group[key]) if isinstance(group[key], dict)
                  else value for key, value in checked.items()}
        object.__setattr__(self, "_values", values)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):  # not a key; and copy/pickle probe before _values exists
            raise AttributeError(key)
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(unknown_key_message(key, self._values)) from None

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

    def override(self, overrides: Overrides) -> "Config":
        """A validated copy with `overrides` applied (see `parse_overrides`)."""
        merged = self.as_dict()
        merge(merged, parse_overrides(overrides), schema())
        return Config(merged)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the full config as YAML (local or GCS path); `get_config(path)` reads it back."""
        write_yaml(self.as_dict(), path)


def _plain(value):
    if isinstance(value, Config):
        return value.as_dict()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
