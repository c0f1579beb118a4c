"""Official weights by name: downloaded once from a (loopback) mirror, then loaded offline."""

import contextlib
import functools
import http.server
import tarfile
import threading

import numpy as np
import pytest
from official_fixture import (
    FIXTURE_DIR,
    assert_official_raw_outputs,
    expected_outputs,
    fixture_weights_restored,
    requires_fixture,
)

from efficientdet_tf import load_weights
from efficientdet_tf.model import official_weights
from efficientdet_tf.model.official_weights import BASE_URL_ENV, archive_url, official_checkpoint


@contextlib.contextmanager
def serving(directory):
    """An HTTP server on 127.0.0.1 serving `directory`; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def mirror_of_fixture(root):
    """A mirror folder holding the fixture as the official efficientdet-d0.tar.gz (whose
    checkpoint sits in a sub-folder, as in the official archives)."""
    archive = root / "efficientdet" / "coco2" / "efficientdet-d0.tar.gz"
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in (FIXTURE_DIR / "ckpt").iterdir():
            tar.add(path, arcname=f"efficientdet-d0/{path.name}")
    return root


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def test_every_family_maps_to_its_official_archive(monkeypatch):
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    base = "https://storage.googleapis.com/cloud-tpu-checkpoints"
    assert archive_url("efficientdet-d7x") == f"{base}/efficientdet/coco2/efficientdet-d7x.tar.gz"
    assert archive_url("efficientdet-lite3x") == f"{base}/efficientdet/coco/efficientdet-lite3x.tgz"
    assert archive_url("efficientnet-b4") == f"{base}/efficientnet/ckptsaug/efficientnet-b4.tar.gz"
    assert archive_url("efficientnet-lite2") == (
        f"{base}/efficientnet/lite/efficientnet-lite2.tar.gz")
    monkeypatch.setenv(BASE_URL_ENV, "http://mirror.example/ckpts/")
    assert archive_url("efficientdet-d0") == (
        "http://mirror.example/ckpts/efficientdet/coco2/efficientdet-d0.tar.gz")
    assert len(official_weights.official_names()) == 9 + 6 + 8 + 5


@requires_fixture
def test_load_by_name_downloads_once_then_works_offline(tmp_path, keras_home, monkeypatch):
    # The fixture's D0 (shared, built once), its weights zeroed first: each load must fill them.
    expected = expected_outputs()
    with fixture_weights_restored() as model:
        zero_weights(model)
        with serving(mirror_of_fixture(tmp_path / "mirror")) as url:
            monkeypatch.setenv(BASE_URL_ENV, url)
            load_weights(model, "efficientdet-d0")
        assert_official_raw_outputs(*model(expected["preprocessed"], training=False))
        assert (keras_home / "efficientdet_tf" / "efficientdet-d0.tar.gz").is_file()

        # The mirror is gone: the cache alone serves the next load.
        zero_weights(model)
        load_weights(model, "efficientdet-d0")
        class_outputs, _ = model(expected["preprocessed"], training=False)
        np.testing.assert_allclose(class_outputs[0], expected["class_outputs_l3"], atol=1e-4)


def zero_weights(model):
    for variable in model.weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))


def test_offline_error_names_the_url_and_the_folder_to_fill(keras_home, monkeypatch):
    with serving(keras_home.parent / "empty_mirror") as url:
        (keras_home.parent / "empty_mirror").mkdir()
        monkeypatch.setenv(BASE_URL_ENV, url)
        with pytest.raises(FileNotFoundError) as error:
            official_checkpoint("efficientnet-b0")
    message = str(error.value)
    assert f"{url}/efficientnet/ckptsaug/efficientnet-b0.tar.gz" in message
    assert str(keras_home / "efficientdet_tf" / "efficientnet-b0_extracted") in message


def test_files_unpacked_by_hand_into_the_cache_are_used(keras_home, monkeypatch):
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9")  # nothing listens there
    unpacked = keras_home / "efficientdet_tf" / "efficientnet-b0_extracted" / "any" / "layout"
    unpacked.mkdir(parents=True)
    (unpacked / "model.ckpt.index").write_bytes(b"")
    assert official_checkpoint("efficientnet-b0") == str(unpacked / "model.ckpt")
