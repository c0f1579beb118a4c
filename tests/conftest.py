"""Test session setup: two logical CPU devices, for the multi-replica training tests.

Logical devices must be configured before TensorFlow initializes its runtime, hence here.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TF's C++ info lines, once per worker process

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
