"""Test session setup: two logical CPU devices, for the multi-replica training tests.

Logical devices must be configured before TensorFlow initializes its runtime, hence here. Its
C++ start-up lines (oneDNN, CUDA probing) are hidden as on the command line: pytest would
otherwise print them after its summary, as output captured outside any test.
`TF_CPP_MIN_LOG_LEVEL=0` shows them.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from efficientdet_tf.cli.quiet import native_stderr_silenced  # noqa: E402

with native_stderr_silenced():
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
