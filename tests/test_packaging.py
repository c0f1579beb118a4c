"""The package works wherever it is installed: a wheel, installed outside the checkout."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Then `python -m efficientdet_tf --mode=summary ...` in the same process (runpy runs the module
# as -m does): one TensorFlow start-up instead of two.
USE_OUTSIDE_THE_CHECKOUT = """
import runpy
import sys
import efficientdet_tf as edet
assert edet.__file__.startswith(sys.argv[1]), edet.__file__
for name in edet.available_models():
    edet.get_config(name)
config = edet.get_config("efficientdet-d0", "demo/synthetic.yaml")
model = edet.build_model(config)
print("models", len(edet.available_models()), "params", model.count_params(), flush=True)
sys.argv = ["efficientdet", *sys.argv[2:]]
runpy.run_module("efficientdet_tf", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory):
    """The project built as a wheel from a copy of the checkout, installed into a bare folder."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist",
                    source], check=True, capture_output=True, timeout=300)
    (wheel,) = (root / "dist").glob("efficientdet_tf-*.whl")
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True,
                   capture_output=True, timeout=300)
    return wheel, site


@pytest.mark.slow
def test_the_wheel_ships_the_hparams_and_the_console_script(installed_wheel):
    wheel, _ = installed_wheel
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "efficientdet = efficientdet_tf.cli.main:run_main" in archive.read(
            entry_points).decode()
    assert {"efficientdet_tf/hparams/base.yaml", "efficientdet_tf/hparams/efficientdet-d7x.yaml",
            "efficientdet_tf/hparams/demo/synthetic.yaml"} <= set(names)


@pytest.mark.slow
def test_the_installed_wheel_builds_models_and_runs_the_cli_from_elsewhere(
        installed_wheel, tmp_path):
    _, site = installed_wheel
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", USE_OUTSIDE_THE_CHECKOUT, str(site), "--mode=summary",
         "--model_name=efficientdet-lite0", "--hparams=image_size=128"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "models 15 params 3876308" in result.stdout
    assert "Total params: 3,290,606" in result.stdout
