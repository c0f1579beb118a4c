"""The YAML files of hparams: the recipe shipped in the package, and files named by the user.

Files are read and written through `tf.io.gfile`, so that a config can live on GCS (gs://);
TensorFlow is imported only then, so that importing the config package stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from efficientdet_tf.errors import ConfigError

HPARAMS_DIR = Path(__file__).resolve().parents[1] / "hparams"


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping a YAML file holds ({} for an empty file)."""
    try:
        if isinstance(path, Path):
            text = path.read_text()
        else:
            with _gfile().GFile(str(path)) as file:
                text = file.read()
        values = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as error:  # ValueError: an int beyond Python's limit
        raise ConfigError(f"Cannot parse YAML file {str(path)!r}: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"YAML file {str(path)!r} must hold a mapping of hparams, not {values!r}.")
    return values


def find_yaml(path: str | os.PathLike, what: str) -> str:
    """`path` itself when it exists, else the file of that name shipped in the package's hparams
    folder (`demo/synthetic.yaml`), so that packaged files work from any directory."""
    path = str(path)
    if _gfile().exists(path):
        return path
    packaged = HPARAMS_DIR / path
    if not os.path.isabs(path) and packaged.is_file():
        return str(packaged)
    shipped = sorted(str(p.relative_to(HPARAMS_DIR)) for p in HPARAMS_DIR.glob("*/*.yaml"))
    raise ConfigError(
        f"{what} {path!r} does not exist, neither as a path nor among the files shipped with "
        f"efficientdet_tf ({', '.join(shipped)})."
    )


def write_yaml(values: dict[str, Any], path: str | os.PathLike) -> None:
    gfile = _gfile()
    gfile.makedirs(os.path.dirname(str(path)) or ".")
    with gfile.GFile(str(path), "w") as file:
        file.write(yaml.safe_dump(values, sort_keys=False))
