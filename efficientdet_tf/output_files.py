"""Outputs written so that a failed write loses nothing, and output folders checked before work.

Every output (an export, a results JSON, a drawn image, config.yaml) is written under a
temporary name beside its final path (`.<name>.partial<suffix>`: hidden, in the same folder and
so on the same file system) and renamed to its final path once complete. What was there before
stays whole until then, and a failed write removes its partial file and raises one
`WriteFailedError` that names the path and the cause. On object stores (gs://, s3://) a rename
is a copy, not atomic: outputs there are written in place and only the error message holds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import tensorflow as tf

from efficientdet_tf.errors import ConfigError, FaultError

# What a write that fails for a reason outside the program raises: OSError from Python,
# OpError (ResourceExhaustedError for a full disk, ...) from TensorFlow's file system.
WRITE_ERRORS = (OSError, tf.errors.OpError)
_WRITE_FAULT_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.EACCES)
_WRITE_FAULT_CAUSES = ("No space left on device", "Read-only file system", "Disk quota exceeded",
                       "File too large", "Permission denied")


class WriteFailedError(FaultError):
    """An output could not be written (a full disk, a read-only file system, ...)."""


def is_local(path: str | os.PathLike) -> bool:
    return "://" not in os.fspath(path)


def partial_path(path: str | os.PathLike) -> str:
    """Where `path` is written until it is complete: hidden, beside it, with its suffix (writers
    such as OpenCV's and Pillow's choose the format by the suffix)."""
    folder, name = os.path.split(os.fspath(path))
    stem, suffix = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.partial{suffix}")


@contextlib.contextmanager
def written_whole(path: str | os.PathLike, what: str = "output") -> Iterator[str]:
    """Yields the path to write `path` (a file or a folder) at; renames it to `path` when the
    block ends, replacing what was there (see `_replace` for folders). A block that fails leaves
    `path` as it was and no partial file; a write error becomes `WriteFailedError` naming `what`
    and `path`."""
    path = os.fspath(path)
    if not is_local(path):
        with write_errors_named(what, path):
            yield path
        return
    partial = partial_path(path)
    with write_errors_named(what, path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        remove(partial)  # left by a run that was killed
    try:
        with write_errors_named(what, path):
            yield partial
            _replace(partial, path)
    finally:
        remove(partial)


def write_file(path: str | os.PathLike, content: str | bytes, what: str = "output") -> Path:
    """Writes `content` (text or bytes) to `path` whole (see `written_whole`); returns `path`."""
    with written_whole(path, what) as partial:
        with tf.io.gfile.GFile(partial, "wb" if isinstance(content, bytes) else "w") as file:
            file.write(content)
    return Path(path)


@contextlib.contextmanager
def write_errors_named(what: str, path: str, keeps: str = "") -> Iterator[None]:
    """Turns a write error in the block into one `WriteFailedError`: '<what> <path> could not be
    written: <cause>.' and `keeps`, a sentence on what stays intact."""
    try:
        yield
    except WRITE_ERRORS as error:
        message = f"{what} {path} could not be written: {write_error_cause(error)}."
        raise WriteFailedError(f"{message} {keeps}".strip()) from None


def write_fault(error: BaseException) -> str | None:
    """'<path>: <cause>' for a write error that no writer above named (a full disk under a
    summary written inside a traced step, say), or None for an error of another kind."""
    if isinstance(error, OSError) and error.errno in _WRITE_FAULT_ERRNOS:
        return f"{error.filename}: {error.strerror}"
    if isinstance(error, tf.errors.OpError):
        line = error.message.strip().splitlines()[0] if error.message.strip() else ""
        line = re.sub(r"^\{\{[^}]*\}\}\s*", "", line)  # TensorFlow's {{function_node ...}}
        if any(cause in line for cause in _WRITE_FAULT_CAUSES):
            return line
    return None


def write_error_cause(error: BaseException) -> str:
    """The cause of a write error in a few words ('No space left on device')."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = getattr(error, "message", None) or str(error)
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    for known in _WRITE_FAULT_CAUSES:
        if known in first_line:
            return known
    return first_line


def remove(path: str) -> None:
    """Removes a file or folder (local or on an object store) if it exists."""
    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


def _replace(partial: str, path: str) -> None:
    """Moves the complete `partial` to `path`. Into an existing folder, a folder moves entry by
    entry and the folder's other entries stay (a SavedModel is written into the folder that also
    holds the other formats' files)."""
    if not (os.path.isdir(partial) and os.path.isdir(path)):
        os.replace(partial, path)
        return
    for name in os.listdir(partial):
        _replace_entry(os.path.join(partial, name), os.path.join(path, name))
    os.rmdir(partial)


def _replace_entry(new: str, old: str) -> None:
    """A file replaces in one rename; a folder cannot, so the old one is moved aside and
    removed only once the new one is in place."""
    if not (os.path.isdir(new) and os.path.lexists(old)):
        os.replace(new, old)
        return
    aside = partial_path(old) + ".old"
    remove(aside)
    os.replace(old, aside)
    os.replace(new, old)
    remove(aside)


def require_writable_folder(path: str | os.PathLike, name: str) -> None:
    """Raises `ConfigError` unless `path` is a folder this process can write in, or one it can
    create: before any work, so that a run does not fail at its first save. `name` is the flag
    or argument that gave the path."""
    path = os.path.abspath(os.fspath(path)) if is_local(path) else None
    if path is None:
        return
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{name}={path} cannot be a folder: {existing} is a file. Choose a "
                          "path that is, or can become, a folder.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ConfigError(f"{name}={path} cannot be written: {existing}: "
                          f"{write_error_cause(error)}. Choose a folder on a writable file "
                          "system.") from None
