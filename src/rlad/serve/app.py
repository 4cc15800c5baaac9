"""The FastAPI app: `POST /v1/predict` (pixel runs), `POST /v1/ground` (grounding runs), `GET /healthz`,
`GET /` (the page).

Every refusal is a 4xx with a JSON body `{"error": "..."}`, decided before any pixel is decoded where
it can be: a body over the size limit or without a length (413 / 411), not multipart (415), a missing
or misnamed field (400), a declared or detected type that is not an allowed image (415), zero bytes,
not an image or truncated (400), too many pixels (413). Work runs on a bounded pool: `workers`
requests at once, `queue` more waiting, the rest refused at once (429); a request that has not
finished after `timeout_s` gets 504 (its computation finishes in the background and is dropped).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from rlad.errors import DataError
from rlad.serve.config import ServeConfig
from rlad.serve.uploads import UploadError

LOG = logging.getLogger("rlad.serve")


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """A POST without a Content-Length (411), with a malformed one (400) or above the size limit (413)
    is answered before its body is read. Plain ASGI on purpose: Starlette's `BaseHTTPMiddleware`
    (`@app.middleware`) runs each request in a task group whose cancellation formats the pending
    body chunk with `repr`, about a millisecond of the event loop per request under load."""

    def __init__(self, app, max_bytes: int, max_mb: float):
        self.app, self.max_bytes, self.max_mb = app, max_bytes, max_mb

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            refusal = self.refusal(dict(scope["headers"]).get(b"content-length"))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, length: bytes | None) -> JSONResponse | None:
        if length is None:
            return error(411, "send the request with a Content-Length header")
        try:
            size = int(length)
        except ValueError:
            return error(400, f"Content-Length {length.decode('latin-1')!r} is not a number")
        if size > self.max_bytes:
            return error(413, f"the request is {size} bytes, more than the server's limit of "
                              f"{self.max_bytes} ({self.max_mb:g} MiB)")
        return None


def create_app(inspector, cfg: ServeConfig):
    app = FastAPI(title="rlad inspection server", docs_url=None, redoc_url=None, openapi_url=None)
    pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="rlad-worker")
    capacity = cfg.workers + cfg.queue
    state = {"in_flight": 0, "served": 0, "refused": 0}
    lock = threading.Lock()
    page = resources.files("rlad.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return error(400, f"bad request: {first.get('msg', 'invalid parameters')} ({'.'.join(map(str, first.get('loc', ())))})")

    app.add_middleware(BodyLimit, max_bytes=cfg.max_upload_bytes, max_mb=cfg.max_upload_mb)

    async def read_files(request: Request, names: tuple[str, ...]) -> dict:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise UploadError(415, f"send multipart/form-data with the image file(s) in field(s) "
                                   f"{', '.join(repr(n) for n in names)} (got content type {kind or 'none'!r})")
        try:
            form = await request.form(max_files=len(names) + 2, max_fields=len(names) + 8)
        except HTTPException as exc:
            raise UploadError(400, f"malformed multipart body: {exc.detail}") from None
        files = {}
        for name in names:
            item = form.get(name)
            if item is None:
                got = ", ".join(repr(k) for k in form.keys()) or "none"
                raise UploadError(400, f"no field {name!r} in the form (fields sent: {got})")
            if isinstance(item, str):
                raise UploadError(400, f"field {name!r} is text, not a file upload")
            files[name] = (await item.read(), item.content_type)
        await form.close()
        return files

    async def run(request: Request, kind: str, overlay: bool):
        if inspector.kind != kind:
            other = "/v1/predict" if inspector.kind == "pixel" else "/v1/ground"
            return error(404, f"this server holds a {inspector.kind} run; use {other}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.timeout_s
        with lock:
            if state["in_flight"] >= capacity:
                state["refused"] += 1
                return error(429, f"busy: {capacity} requests already in progress or waiting; retry shortly",
                             headers={"Retry-After": "1"})
            state["in_flight"] += 1
        try:
            files = await asyncio.wait_for(read_files(request, inspector.fields), timeout=cfg.timeout_s)
            job = loop.run_in_executor(pool, inspector.handle, files, cfg, overlay)
            result = await asyncio.wait_for(job, timeout=max(0.0, deadline - loop.time()))
        except UploadError as exc:
            return error(exc.status, exc.message)
        except DataError as exc:
            return error(400, str(exc))
        except MemoryError:
            return error(413, "the image needs more memory than the server has; send a smaller one")
        except (asyncio.TimeoutError, TimeoutError):
            return error(504, f"not finished within the server's limit of {cfg.timeout_s:g} s")
        finally:
            with lock:
                state["in_flight"] -= 1
        with lock:
            state["served"] += 1
        return JSONResponse(result)

    @app.post("/v1/predict")
    async def predict(request: Request, overlay: bool = False):
        """Multipart field `image`: score, label, boxes, mask PNG (base64) and timing; `?overlay=true`
        adds the labelled overlay panel (base64 PNG)."""
        return await run(request, "pixel", overlay)

    @app.post("/v1/ground")
    async def ground(request: Request):
        """Multipart fields `reference` and `query`: the box of their difference in the query's pixels."""
        return await run(request, "grounding", False)

    @app.get("/healthz")
    async def healthz():
        with lock:
            counts = dict(state)
        return {"status": "ok", **inspector.describe(), **counts, "capacity": capacity,
                "limits": {"max_upload_bytes": cfg.max_upload_bytes, "max_pixels": cfg.max_pixels,
                           "allowed_types": cfg.allowed_types, "timeout_s": cfg.timeout_s, "workers": cfg.workers,
                           "queue": cfg.queue}}

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    app.state.pool = pool
    return app
