"""The API of a real `rlad serve` process on loopback: a good image gets what `rlad predict` decides;
every kind of bad upload gets a 4xx with a JSON error, and the server keeps serving."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image


def _png(width: int, height: int, value: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sample(tiny_patchcore_run):
    path = tiny_patchcore_run.parent / "tiny" / "test" / "hole" / "000.png"
    return path, path.read_bytes()


def _post(url: str, **kwargs) -> httpx.Response:
    return httpx.post(url, timeout=60, **kwargs)


def test_predict_gives_what_rlad_predict_gives(server, sample, tiny_patchcore_run, tmp_path):
    from rlad.workflows.predict import predict

    path, data = sample
    response = _post(f"{server}v1/predict?overlay=true", files={"image": ("part.png", data, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    row = predict(tiny_patchcore_run, [path], tmp_path / "out").rows[0]
    assert abs(body["score"] - row["score"]) < 1e-6
    assert body["anomalous"] == row["anomalous"] and body["label"] == ("anomalous" if row["anomalous"] else "normal")
    assert body["boxes"] == row["boxes"] and body["mask_rule"] == row["mask_rule"]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))))
    written = np.asarray(Image.open(tmp_path / "out" / row["mask"]))
    assert mask.shape == (48, 64) and (mask == written).all()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.width > 2 * 64 and overlay.height > 48  # image beside its heat map, under a title strip
    assert set(body["timing_ms"]) == {"decode", "model", "post", "total"}
    assert body["timing_ms"]["total"] >= body["timing_ms"]["model"] > 0


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="GIF")
    return buffer.getvalue()


def _bad_requests(png: bytes) -> list[tuple[str, dict, int, str]]:
    return [
        ("not an image", {"files": {"image": ("a.png", b"hello, world " * 20, "image/png")}}, 400, "not an image"),
        ("truncated", {"files": {"image": ("a.png", png[: len(png) // 2], "image/png")}}, 400, "truncated"),
        ("too many pixels", {"files": {"image": ("a.png", _png(1100, 1000), "image/png")}}, 413, "pixels"),
        ("too many bytes", {"files": {"image": ("a.png", np.random.default_rng(0).bytes(1_200_000), "image/png")}},
         413, "limit"),
        ("zero bytes", {"files": {"image": ("a.png", b"", "image/png")}}, 400, "empty"),
        ("wrong field", {"files": {"picture": ("a.png", png, "image/png")}}, 400, "no field 'image'"),
        ("wrong content type", {"files": {"image": ("a.png", png, "text/plain")}}, 415, "text/plain"),
        ("another format's bytes", {"files": {"image": ("a.png", _gif(), "image/png")}}, 415, "GIF"),
        ("not multipart", {"content": png, "headers": {"content-type": "image/png"}}, 415, "multipart/form-data"),
        ("a text field", {"data": {"image": "hello"}, "files": {"note": ("n.txt", b"x", "text/plain")}}, 400,
         "text, not a file"),
        ("malformed multipart", {"content": b"--xyz\r\nnonsense\r\n",
                                 "headers": {"content-type": "multipart/form-data; boundary=xyz"}}, 400, ""),
        ("too small", {"files": {"image": ("a.png", _png(8, 8), "image/png")}}, 400, "too small"),
    ]


def test_bad_uploads_get_a_4xx_json_error_and_the_server_keeps_serving(server, sample):
    _, png = sample
    for name, request, status, fragment in _bad_requests(png):
        response = _post(f"{server}v1/predict", **request)
        assert response.status_code == status, (name, response.status_code, response.text)
        assert response.headers["content-type"] == "application/json", name
        assert fragment in response.json()["error"], (name, response.json())
    assert _post(f"{server}v1/ground", files={"image": ("a.png", png, "image/png")}).status_code == 404
    missing = httpx.get(f"{server}nothing-here", timeout=30)
    assert missing.status_code == 404 and "error" in missing.json()

    health = httpx.get(f"{server}healthz", timeout=30).json()
    assert health["status"] == "ok" and health["kind"] == "pixel" and health["in_flight"] == 0
    assert health["limits"]["max_pixels"] == 1_000_000 and health["limits"]["max_upload_bytes"] == 2**20
    again = _post(f"{server}v1/predict", files={"image": ("a.png", png, "image/png")})
    assert again.status_code == 200 and 0.0 <= again.json()["score"] < 1.0


def test_bound_to_loopback_and_the_page_is_served(server):
    assert server.startswith("http://127.0.0.1:")
    page = httpx.get(server, timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "v1/predict" in page.text


def test_bad_settings_and_runs_are_one_line_errors_before_anything_is_served(tiny_patchcore_run, tmp_path, capsys):
    from rlad.cli.main import main

    for argv, message in [
        (["serve", str(tiny_patchcore_run), "--port", "99999", "--set", "workers=0"],
         "port must be in 0..65535, got 99999; workers must be at least 1, got 0"),
        (["serve", str(tiny_patchcore_run), "--set", "max_pixels=10"], "max_pixels must be at least 1024"),
        (["serve", str(tmp_path / "nothing")], "run directory not found"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_a_body_without_content_length_is_refused_before_it_is_read(server, sample):
    import http.client
    import json
    from urllib.parse import urlsplit

    _, png = sample
    address = urlsplit(server)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("POST", "/v1/predict", body=iter([png]), encode_chunked=True,
                       headers={"Content-Type": "multipart/form-data; boundary=x", "Transfer-Encoding": "chunked"})
    response = connection.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    connection.close()
    assert _post(f"{server}v1/predict", files={"image": ("a.png", png, "image/png")}).status_code == 200
