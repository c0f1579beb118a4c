"""Hyper-parameters: the official recipe in `efficientdet_tf/hparams/*.yaml`, validated on
construction, overridable.

The YAML files ship inside the package, so an installed wheel reads the same recipe as a checkout.
`hparams/base.yaml` holds every key with the official default; `hparams/<model>.yaml` changes what
differs for one model; `hparams/demo/` holds ready-made overrides (`demo/synthetic.yaml`). The
schema gives each key its type, and each number its range, so that an unknown key or a bad value
fails at once with a `ConfigError` naming the key, rather than deep inside the model or the input
pipeline.

The parts: `types` (value types and ranges), `structured` (fpn_config, backbone_config), `schema`
(each key's type), `parsing` (override strings), `files` (YAML files), `merging`, `validation`
(types, then the joint rules), `values` (`Config`), `loading` (`get_config`).
"""

from efficientdet_tf.config.files import HPARAMS_DIR
from efficientdet_tf.config.loading import available_models, get_config
from efficientdet_tf.config.parsing import parse_overrides
from efficientdet_tf.config.schema import HEADS
from efficientdet_tf.config.values import Config
from efficientdet_tf.errors import ConfigError

__all__ = ["HEADS", "HPARAMS_DIR", "Config", "ConfigError", "available_models", "get_config",
           "parse_overrides"]
