"""The official config of a model, or a saved one, with overrides."""

from __future__ import annotations

import difflib
import os
from typing import Any

from efficientdet_tf.config.files import HPARAMS_DIR, find_yaml, read_yaml
from efficientdet_tf.config.merging import merge
from efficientdet_tf.config.parsing import Overrides, parse_overrides
from efficientdet_tf.config.schema import schema
from efficientdet_tf.config.values import Config
from efficientdet_tf.errors import ConfigError


def available_models() -> list[str]:
    """Model names with a file in `hparams/`."""
    return sorted(p.stem for p in HPARAMS_DIR.glob("*.yaml") if p.stem != "base")


def get_config(model_name: str | os.PathLike = "efficientdet-d0",
               overrides: Overrides = None) -> Config:
    """The official config of `model_name` (or of a saved config YAML file), with `overrides`.

    `overrides` is a string `key=value,nested.key=value,list_key=[1.0,2.0]` (the official forms
    `list_key=1.0*2.0` and `image_size=WxH` too), a path to a YAML file, or a dict; every key must
    already exist.
    """
    values = read_yaml(HPARAMS_DIR / "base.yaml")
    merge(values, _model_values(model_name), schema())
    merge(values, parse_overrides(overrides), schema())
    return Config(values)


def _model_values(model_name: str | os.PathLike) -> dict[str, Any]:
    if str(model_name).endswith((".yaml", ".yml")):
        return read_yaml(find_yaml(model_name, "Config file"))
    model_file = HPARAMS_DIR / f"{model_name}.yaml"
    if not model_file.is_file():
        close = difflib.get_close_matches(str(model_name), available_models(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"Unknown model name {str(model_name)!r}.{hint} "
            f"Known models: {', '.join(available_models())}."
        )
    return read_yaml(model_file)
