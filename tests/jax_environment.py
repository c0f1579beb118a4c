"""What a JAX test process sets before JAX starts (conftest.py for a JAX session; test_backends.py
for its JAX subprocess)."""

import os
import tempfile

# JAX's persistent compilation cache: the tests training the same small model compile its step
# once, and a later run compiles nothing again (JAX keys each program by its computation).
COMPILATION_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), "efficientdet_tf_jax_cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "1",
}
# Two host devices, for the DataParallel training tests.
TWO_HOST_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
