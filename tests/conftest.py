"""Test session setup: two logical CPU devices (TensorFlow) or two host devices (JAX), for the
multi-device training tests.

Logical devices must be configured before TensorFlow initializes its runtime, hence here. Its
C++ start-up lines (oneDNN, CUDA probing) are hidden as on the command line: pytest would
otherwise print them after its summary, as output captured outside any test.
`TF_CPP_MIN_LOG_LEVEL=0` shows them.
"""

import os

import jax_environment

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
if os.environ.get("KERAS_BACKEND") == "jax":  # before JAX starts
    for name, value in {**jax_environment.TWO_HOST_DEVICES,
                        **jax_environment.COMPILATION_CACHE}.items():
        os.environ.setdefault(name, value)

from efficientdet_tf.cli.quiet import native_stderr_silenced  # noqa: E402

with native_stderr_silenced():
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import pytest  # noqa: E402
from backends import BACKEND  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Under another Keras backend than TensorFlow (`KERAS_BACKEND=jax pytest -m any_backend`,
    README), only tests marked `any_backend` run: the rest test TensorFlow-only features."""
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"a TensorFlow-only feature; KERAS_BACKEND is {BACKEND}")
    for item in items:
        if "any_backend" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def exported_files(tmp_path_factory):
    """The shared exported set (`exported_files.py`): {name: path}, written once per run."""
    import exported_files as shared  # noqa: PLC0415

    return shared.exported_files(tmp_path_factory)


@pytest.fixture(scope="session")
def shared_network(exported_files):
    """(network, config) of the shared exported set, with the weights that were exported."""
    import exported_files as shared  # noqa: PLC0415

    return shared.shared_network(exported_files)
