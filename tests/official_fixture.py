"""The official EfficientDet-D0 fixture in the shared folder, and a marker that skips without it.

/work/shared (next to the repository root) holds what google/automl produced for one checkpoint
and one image; see its README.md. Tests comparing against it use `requires_fixture`.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE_DIR = SHARED_DIR / "fixtures" / "automl-efficientdet-d0"
FIXTURE_MODEL = "efficientdet-d0"
FIXTURE_LEVELS = range(3, 8)

requires_fixture = pytest.mark.skipif(
    not (FIXTURE_DIR / "expected.npz").is_file(),
    reason=f"official fixture not found: {FIXTURE_DIR} (the shared folder is absent here)",
)


@functools.lru_cache(maxsize=None)
def expected_outputs() -> dict[str, np.ndarray]:
    """Arrays of expected.npz (preprocessed, image_scale, raw outputs, detections per mode)."""
    with np.load(FIXTURE_DIR / "expected.npz") as arrays:
        return dict(arrays)


@functools.lru_cache(maxsize=None)
def fixture_network():
    """The fixture's D0 with its (EMA) weights, built once per test process for the modules that
    compare with it (building D0 and reading its checkpoint take seconds). A test that changes
    its weights does so inside `fixture_weights_restored`."""
    from efficientdet_tf import build_model, get_config, load_weights  # noqa: PLC0415

    model = build_model(get_config(FIXTURE_MODEL))
    load_weights(model, FIXTURE_DIR / "ckpt")
    return model


@contextlib.contextmanager
def fixture_weights_restored():
    """Yields `fixture_network()` for a test that changes its weights; loads the fixture's back
    afterwards, whatever the test did."""
    from efficientdet_tf import load_weights  # noqa: PLC0415

    try:
        yield fixture_network()
    finally:
        load_weights(fixture_network(), FIXTURE_DIR / "ckpt")


def input_image() -> np.ndarray:
    """The fixture's uint8 RGB image [480, 640, 3]."""
    return np.asarray(Image.open(FIXTURE_DIR / "input.png").convert("RGB"))


def raw_outputs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Official network outputs: class logits and box regressions, lists ordered level 3..7."""
    expected = expected_outputs()
    return (
        [expected[f"class_outputs_l{level}"] for level in FIXTURE_LEVELS],
        [expected[f"box_outputs_l{level}"] for level in FIXTURE_LEVELS],
    )


def assert_official_raw_outputs(class_outputs, box_outputs) -> None:
    """The network's class and box outputs of the fixture's image, level by level, equal to the
    official ones to 1e-4."""
    expected_class, expected_box = raw_outputs()
    for index, level in enumerate(FIXTURE_LEVELS):
        np.testing.assert_allclose(class_outputs[index], expected_class[index], atol=1e-4,
                                   err_msg=f"class outputs, level {level}")
        np.testing.assert_allclose(box_outputs[index], expected_box[index], atol=1e-4,
                                   err_msg=f"box outputs, level {level}")


def expected_detections(mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Official boxes [N, 4] (yxyx, original pixels), scores [N], 1-based classes [N] of a mode."""
    expected = expected_outputs()
    return tuple(expected[f"det_{mode}_{key}"] for key in ("boxes_yxyx", "scores", "classes"))
