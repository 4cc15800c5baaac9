"""The page at `/`, driven in headless Chromium (Debian's `chromium`) through its DevTools protocol:
a file is put into the page's file input as a person would pick it, and the score the page then shows
is the server's score for that image; the screenshot shows the overlay."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time

import httpx
import numpy as np
import pytest
from PIL import Image


DEVTOOLS_FLAGS = ["--remote-debugging-port=0", "--remote-allow-origins=*", "--window-size=1000,900"]




class DevTools:
    """The smallest DevTools protocol client: one page target, commands answered in order, events kept."""

    def __init__(self, ws_url: str):
        import websocket

        self.socket = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def __call__(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str):
        return self("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")


@pytest.fixture
def browser(tmp_path, headless_chromium):
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    process = subprocess.Popen([*headless_chromium, *DEVTOOLS_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 60
    while not (active.is_file() and active.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    port = int(active.read_text().splitlines()[0])
    targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=30).json()
    page = next(t for t in targets if t["type"] == "page")
    tools = DevTools(page["webSocketDebuggerUrl"])
    yield tools
    tools.socket.close()
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def test_a_dropped_image_shows_its_score_and_overlay(server, browser, tiny_patchcore_run, tmp_path):
    image = tiny_patchcore_run.parent / "tiny" / "test" / "scratch" / "001.png"
    expected = httpx.post(f"{server}v1/predict", files={"image": ("x.png", image.read_bytes(), "image/png")},
                          timeout=60).json()

    browser("Page.enable")
    browser("Page.navigate", url=server)
    browser.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
    browser.wait_for("document.getElementById('model').textContent.includes('patchcore')")
    root = browser("DOM.getDocument")["root"]["nodeId"]
    node = browser("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    browser("DOM.setFileInputFiles", files=[str(image)], nodeId=node)  # what picking the file in the dialog does
    state = browser.wait_for("['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state")
    assert state == "done", browser.evaluate("document.getElementById('label').textContent")

    shown = browser.evaluate("document.getElementById('score').textContent")
    assert shown == f"{expected['score']:.3f}"
    assert browser.evaluate("document.getElementById('label').textContent") == expected["label"]
    assert browser.evaluate("document.getElementById('overlay').naturalWidth") > 2 * 64

    shot = browser("Page.captureScreenshot", format="png")["data"]
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(shot))).convert("RGB")).astype(np.int16)
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    assert colourful.mean() > 0.005  # the heat map and the coloured verdict are on screen, not only text
