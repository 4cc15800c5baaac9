"""Where backbone weights come from: the resolution order, and a real download from a loopback HTTP
server (hash check, cache reuse, the one-line error when offline)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from rlad.cli.main import main
from rlad.errors import ConfigError
from rlad.models import weights as wmod
from rlad.models.backbones import MobileNetV2, load_backbone, record_backbones


class _Server:
    """Serves `self.files` (name -> bytes) on 127.0.0.1 and counts the requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server hook name
                outer.requests.append(self.path)
                body = outer.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    srv = _Server()
    monkeypatch.setenv("RLAD_WEIGHTS_URL", srv.url)
    yield srv
    srv.close()


@pytest.fixture
def small_weights(tmp_path, monkeypatch) -> bytes:
    """A valid mobilenet_v2 state-dict file (seeded random weights) registered as the arch's pretrained
    file, so the download path runs end to end without the real 14 MB ImageNet file."""
    torch.manual_seed(0)
    path = tmp_path / "made.pth"
    torch.save(MobileNetV2().state_dict(), path)
    payload = path.read_bytes()
    spec = wmod.PretrainedFile("mobilenet_v2-test.pth", hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(wmod.PRETRAINED, "mobilenet_v2", spec)
    return payload


def test_download_checks_the_hash_then_the_cache_is_reused(server, small_weights):
    cache = wmod.cache_dir()
    corrupted = bytearray(small_weights)
    corrupted[len(corrupted) // 2] ^= 0xFF
    server.files["mobilenet_v2-test.pth"] = bytes(corrupted)
    with pytest.raises(ConfigError, match="SHA-256 .* does not match"):
        wmod.resolve("mobilenet_v2", "imagenet")
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing half-written left behind

    server.files["mobilenet_v2-test.pth"] = small_weights
    first = wmod.resolve("mobilenet_v2", "imagenet")
    assert first.source == "download" and first.path == cache / "mobilenet_v2-test.pth"
    assert first.path.read_bytes() == small_weights
    assert len(server.requests) == 2

    second = wmod.resolve("mobilenet_v2", "imagenet")
    assert second.source == "cache" and second.path == first.path
    assert len(server.requests) == 2  # no new request: the cache served it

    with record_backbones() as loaded:
        network = load_backbone("mobilenet_v2", "imagenet")
    expected = torch.load(first.path, weights_only=True)
    assert torch.equal(network.state_dict()["features.3.conv.1.0.weight"], expected["features.3.conv.1.0.weight"])
    assert loaded == [{"arch": "mobilenet_v2", "weights": "imagenet", "pretrained": True, "source": "cache",
                       "file": str(first.path), "sha256": hashlib.sha256(small_weights).hexdigest()}]


def test_offline_without_a_file_is_one_clear_error(server, small_weights):
    # The server knows no such file (404); the conftest's default URL is a closed port (refused).
    with pytest.raises(ConfigError) as error:
        wmod.resolve("mobilenet_v2", "imagenet")
    message = str(error.value)
    assert "\n" not in message
    assert str(wmod.cache_dir()) in message and "mobilenet_v2-test.pth" in message
    assert "RLAD_BACKBONE_WEIGHTS" in message and "=random" in message


def test_offline_fit_exits_2_with_where_to_put_the_file(tiny_mvtec, tmp_path, capsys):
    code = main(["fit", "patchcore", "--data", str(tiny_mvtec), "--out", str(tmp_path / "run"),
                 "--set", "image_size=64"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    [error] = [line for line in err.splitlines() if line.startswith("rlad: error:")]
    assert "mobilenet_v2-b0353104.pth" in error and str(wmod.cache_dir()) in error


def test_resolution_order(tmp_path, monkeypatch, server, small_weights):
    explicit, from_env, in_folder = tmp_path / "explicit.pth", tmp_path / "env.pth", tmp_path / "folder"
    for path in (explicit, from_env):
        path.write_bytes(small_weights)
    in_folder.mkdir()
    (in_folder / "mobilenet_v2-test.pth").write_bytes(small_weights)
    cached = wmod.cache_dir() / "mobilenet_v2-test.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(small_weights)

    monkeypatch.setenv("RLAD_BACKBONE_WEIGHTS", str(from_env))
    assert wmod.resolve("mobilenet_v2", str(explicit)).path == explicit  # an explicit path wins
    assert wmod.resolve("mobilenet_v2", "imagenet").path == from_env  # then the variable (a file)
    assert wmod.resolve("mobilenet_v2", "").path == from_env  # empty means the default
    monkeypatch.setenv("RLAD_BACKBONE_WEIGHTS", str(in_folder))
    assert wmod.resolve("mobilenet_v2", "imagenet").path == in_folder / "mobilenet_v2-test.pth"  # or a folder
    monkeypatch.setenv("RLAD_BACKBONE_WEIGHTS", str(tmp_path))  # a folder without the file: on to the cache
    assert wmod.resolve("mobilenet_v2", "imagenet").path == cached
    assert wmod.resolve("mobilenet_v2", "random").path is None  # random only when asked for
    assert server.requests == []

    monkeypatch.setenv("RLAD_BACKBONE_WEIGHTS", str(tmp_path / "typo.pth"))
    with pytest.raises(ConfigError, match="RLAD_BACKBONE_WEIGHTS=.*typo.pth: no such file"):
        wmod.resolve("mobilenet_v2", "imagenet")
    with pytest.raises(ConfigError, match="model.backbone.weights=.*nope.pth: file not found"):
        wmod.resolve("mobilenet_v2", str(tmp_path / "nope.pth"))


def test_every_architecture_has_torchvisions_file_name_and_url():
    for arch, spec in wmod.PRETRAINED.items():
        assert spec.filename.startswith(arch + "-") and spec.filename.endswith(".pth")
        # torchvision's names carry the first 8 hex digits of the file's SHA-256.
        assert spec.sha256.startswith(spec.filename.rsplit("-", 1)[1][:8])
    assert wmod.OFFICIAL_URL == "https://download.pytorch.org/models/"


def test_the_real_mobilenet_file_passes_the_full_hash(imagenet_mobilenet: Path):
    assert wmod.file_sha256(imagenet_mobilenet) == wmod.PRETRAINED["mobilenet_v2"].sha256
