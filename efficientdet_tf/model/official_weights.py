"""The official released checkpoints by name: downloaded once into the Keras cache, then offline.

`official_checkpoint("efficientdet-d0")` returns the directory of the unpacked checkpoint,
fetching `<base>/efficientdet/coco2/efficientdet-d0.tar.gz` on first use with
`keras.utils.get_file` (progress bar, cache under `KERAS_HOME`, default `~/.keras`). `<base>` is
the official bucket, or the mirror named by the environment variable `EFFICIENTDET_TF_WEIGHTS_URL`
(same paths beneath it).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

DEFAULT_BASE_URL = "https://storage.googleapis.com/cloud-tpu-checkpoints"
BASE_URL_ENV = "EFFICIENTDET_TF_WEIGHTS_URL"
CACHE_SUBDIR = "efficientdet_tf"

# Archive path under <base> of each official name, by family.
_ARCHIVES = {
    **{f"efficientdet-d{i}": f"efficientdet/coco2/efficientdet-d{i}.tar.gz"
       for i in [*range(8), "7x"]},
    **{f"efficientdet-lite{i}": f"efficientdet/coco/efficientdet-lite{i}.tgz"
       for i in [*range(5), "3x"]},
    **{f"efficientnet-b{i}": f"efficientnet/ckptsaug/efficientnet-b{i}.tar.gz" for i in range(8)},
    **{f"efficientnet-lite{i}": f"efficientnet/lite/efficientnet-lite{i}.tar.gz" for i in range(5)},
}


def official_names() -> list[str]:
    """Every name `official_checkpoint` knows."""
    return sorted(_ARCHIVES)


def is_official_name(name: str) -> bool:
    return name in _ARCHIVES


def archive_url(name: str) -> str:
    base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return f"{base.rstrip('/')}/{_ARCHIVES[name]}"


def official_checkpoint(name: str) -> str:
    """The checkpoint prefix of the official checkpoint `name`, downloading it if not cached."""
    if name not in _ARCHIVES:
        raise KeyError(f"{name!r} is not an official checkpoint name; known: "
                       f"{', '.join(official_names())}.")
    archive = _ARCHIVES[name].rsplit("/", 1)[1]
    extracted = _cache_dir() / f"{name}_extracted"  # where get_file unpacks `archive`
    if not _checkpoint_indexes(extracted):
        url = archive_url(name)
        try:
            keras.utils.get_file(archive, url, cache_dir=str(extracted.parent.parent),
                                 cache_subdir=CACHE_SUBDIR, extract=True)
        except Exception as error:  # get_file raises a bare Exception for network failures
            raise FileNotFoundError(
                f"Cannot download the official checkpoint {name!r} from {url} ({error}). "
                f"Without network, download it elsewhere and unpack it so that its checkpoint "
                f"files lie under {extracted}/ (any folder layout), or set {BASE_URL_ENV} to a "
                "mirror with the same paths."
            ) from None
    return _single_checkpoint(extracted, name)


def _cache_dir() -> Path:
    """CACHE_SUBDIR of the Keras home (`KERAS_HOME`, else ~/.keras), as Keras resolves it."""
    home = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()
    cache = home / CACHE_SUBDIR
    cache.mkdir(parents=True, exist_ok=True)  # get_file would fall back to /tmp if it is absent
    return cache


def _checkpoint_indexes(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.index")) if directory.is_dir() else []


def _single_checkpoint(directory: Path, name: str) -> str:
    """The one checkpoint prefix under `directory`, whatever the archive's folder layout."""
    indexes = _checkpoint_indexes(directory)
    if len(indexes) != 1:
        raise FileNotFoundError(
            f"Expected one checkpoint (a '<prefix>.index' file) for {name!r} under {directory}, "
            f"found {len(indexes)}: {[str(p) for p in indexes[:5]]}. Remove that folder to "
            "download it again."
        )
    return str(indexes[0])[: -len(".index")]
