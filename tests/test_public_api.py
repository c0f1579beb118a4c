"""The names `import efficientdet_tf` offers: found by `dir()` (completion) before first use,
each resolving to a real object, without loading TensorFlow on import."""

import subprocess
import sys

import efficientdet_tf as edet

PUBLIC = {"CheckpointMismatchError", "Config", "ConfigError", "ObjectDetector", "available_models",
          "build_model", "get_config", "load_weights", "open_detector", "save_weights"}


def test_dir_lists_every_lazy_name_and_each_resolves():
    assert PUBLIC <= set(dir(edet))
    assert set(edet.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(edet, name).__name__ == name


def test_importing_the_package_does_not_load_tensorflow():
    check = ("import sys, efficientdet_tf as e; dir(e); "
             "assert 'tensorflow' not in sys.modules, 'tensorflow loaded'")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
