"""REST service for an exported run: one onnxruntime session, the run's own preprocessing, every task.

The export's metadata names its answer record (``answer``, ``pipeline.delivery.answers``: the one post-processor
prediction uses too, and the routes it serves), every output with its activation and threshold (``outputs``) and
the task's own routes (``routes``); nothing here names a task.

- ``GET /ping/``: health (open even when an API key is set, for health checks).
- ``POST /predict`` (one image, field ``image``): classifiers answer ``label`` and ``probabilities`` of the
  main output plus every output (multi-head) under ``outputs``; detectors answer ``detections`` (boxes
  in the image's pixels, above the score threshold: the service's ``score_threshold``, by default the run's
  saved best-F1 one, or a request's ``?score_threshold=<0..1|best>``); embedding models answer ``embedding``.
- ``POST /compare`` (fields ``image1``, ``image2``; pair and embedding models): ``score`` and ``same``.
- Task routes (e.g. ``/glass_no_glass/``): ``{<answer>: class, "probability": p}``.

A face-based preprocessing that finds no face answers ``no_face``. Every error, whatever its cause, is
JSON ``{"error": ...}``; a malformed request gets a 4xx, never a 500.

The service bounds its work (``ServeLimits``, keys of configs/serve.yaml): a request body stops being
read at ``2 * max_upload_mb`` (+64 KiB of multipart framing; chunked bodies included) and one file at
``max_upload_mb`` (413); an image whose header declares more than ``max_pixels`` pixels is refused (413)
before anything decodes it, and only JPEG, PNG, WebP, BMP and TIFF headers are accepted (415);
``max_concurrency`` images are decoded and inferred at once, ``max_queue`` more requests wait, and
beyond that a POST gets 503 with ``Retry-After`` before its body is read. With an API key
(``api_key`` or the environment variable ``PIPELINE_API_KEY``) every route but ``/ping/`` needs it as
``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (compared in constant time), else 401.
"""

from __future__ import annotations

import functools
import hmac
import io
import ipaddress
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.data.cache import usable_cores
from pipeline.data.io import decode_image
from pipeline.data.prediction_inputs import NO_FACE, PredictionDataset
from pipeline.delivery.answers import Answer, PairScores
from pipeline.delivery.backend import OnnxBackend
from pipeline.delivery.export import ensure_export
from pipeline.runs.layout import RunLayout
from pipeline.runs.run import Run
from pipeline.utils.errors import UserError

API_KEY_ENV = "PIPELINE_API_KEY"
OPEN_PATHS = ("/ping/",)
# Formats with a fixed signature at byte 0, so Pillow (header) and OpenCV (decoder) read the same format.
SERVED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
RETRY_AFTER_S = 1
ImageUpload = Annotated[UploadFile, File(description="the image, multipart/form-data field 'image'")]


def default_concurrency() -> int:
    return usable_cores()


@dataclass(frozen=True)
class ServeLimits:
    """How much one service takes on; the defaults are configs/serve.yaml's."""

    max_upload_bytes: int = 10 * 1024 * 1024
    # 50 MP: a 48 MP phone photo passes; decoding one peaks near 6 bytes/pixel (BGR + RGB copy), 300 MB.
    max_pixels: int = 50_000_000
    max_concurrency: int = field(default_factory=default_concurrency)
    # A waiting request holds only its spooled upload (on disk above 1 MB); decoding happens in a slot.
    max_queue: int = 64
    api_key: str | None = None

    @property
    def max_body_bytes(self) -> int:
        """The whole request body: ``/compare`` carries two images, plus the multipart framing."""
        return 2 * self.max_upload_bytes + 64 * 1024

    @classmethod
    def from_config(cls, cfg: Any) -> ServeLimits:
        """The limits of a serve config (its values checked by ``validate_config``, as every command's are)."""
        api_key = cfg.api_key if cfg.api_key is not None else os.environ.get(API_KEY_ENV) or None
        return cls(max_upload_bytes=int(cfg.max_upload_mb * 1024 * 1024), max_pixels=cfg.max_pixels,
                   max_concurrency=cfg.max_concurrency or default_concurrency(), max_queue=cfg.max_queue,
                   api_key=None if api_key is None else str(api_key))


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class UploadError(Exception):
    """A request the service cannot use; becomes a JSON error with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ExportedModel:
    """The exported model with the run's preprocessing: decode an upload, preprocess it as evaluation did, run."""

    def __init__(self, model: OnnxBackend, datamodule: Any, limits: ServeLimits, options: dict[str, Any] | None = None,
                 layout: RunLayout | None = None):
        self.model, self.datamodule, self.metadata, self.limits = model, datamodule, model.metadata, limits
        self.layout = layout
        options = {key: value for key, value in (options or {}).items() if value is not None}
        unknown = self.unserved(options)
        if unknown:
            raise UserError(f"{unknown}: not an option of this run's service ({model.answer.__name__} takes "
                            f"{', '.join(model.answer.SERVED_OPTIONS) or 'none'})")
        self.options = model.answer.settle_options(options, layout)  # the service's defaults, settled once
        self.slots = threading.BoundedSemaphore(limits.max_concurrency)
        # OpenCV face detectors are not documented as thread-safe; the ONNX session is.
        self.preprocess_lock = threading.Lock()

    def read_upload(self, upload: UploadFile) -> np.ndarray:
        """The uploaded image as RGB uint8; UploadError for empty, oversized or undecodable uploads."""
        limit = self.limits.max_upload_bytes
        data = upload.file.read(limit + 1)
        if not data:
            raise UploadError(400, f"{upload.filename or 'image'}: the upload is empty")
        if len(data) > limit:
            raise UploadError(413, f"image: larger than the {limit} byte limit")
        source = f"image '{upload.filename}'"
        self.check_pixels(data, source)
        try:
            return decode_image(data, source)
        except UserError as exc:
            raise UploadError(415, str(exc)) from None

    def check_pixels(self, data: bytes, source: str) -> None:
        """UploadError unless the header is of a served format and declares at most ``max_pixels`` pixels;
        Pillow reads only the header, so nothing has been decoded yet."""
        try:
            with Image.open(io.BytesIO(data), formats=SERVED_FORMATS) as image:
                pixels = image.width * image.height
        except Image.DecompressionBombError:  # Pillow's own check; max_pixels is kept below its limit
            pixels = math.inf
        except Exception:  # noqa: BLE001 - whatever the parser makes of untrusted bytes, they are no usable image
            raise UploadError(415, f"{source}: not a readable JPEG, PNG, WebP, BMP or TIFF image") from None
        if pixels > self.limits.max_pixels:
            raise UploadError(413, f"{source}: more pixels than the {self.limits.max_pixels} limit (max_pixels)")

    def in_slot(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """``handler`` (a route) run in one of the ``max_concurrency`` slots: decoding, preprocessing, model."""

        @functools.wraps(handler)  # FastAPI reads the route's parameters through the wrapper
        def bounded(*args, **kwargs):
            with self.slots:
                return handler(*args, **kwargs)

        return bounded

    def unserved(self, options: dict[str, Any]) -> str | None:
        """The first (by name) of ``options`` that the answer does not take from a service (``SERVED_OPTIONS``)."""
        return min(set(options) - set(self.model.answer.SERVED_OPTIONS), default=None)

    def request_options(self, request: Request | None) -> dict[str, Any]:
        """The service's options with a request's query parameters (the answer's ``SERVED_OPTIONS``) over them;
        UploadError (400) for another parameter or a bad value."""
        query = dict(request.query_params) if request is not None else {}
        if not query:
            return self.options
        unknown = self.unserved(query)
        if unknown:
            accepted = ", ".join(self.model.answer.SERVED_OPTIONS) or "none"
            raise UploadError(400, f"query parameter {unknown!r}: not an option of this service "
                                   f"(it takes {accepted})")
        try:
            return self.model.answer.settle_options({**self.options, **query}, self.layout, announce=False)
        except UserError as exc:
            raise UploadError(400, str(exc)) from None

    def answer(self, *images: np.ndarray, options: dict[str, Any] | None = None) -> Answer | None:
        """The export's answer record for one image (``image``) or a pair (``image1``, ``image2``), preprocessed by
        the data's ``predict_item`` as prediction does; None when preprocessing finds no usable input.
        ``options``: the request's (default: the service's)."""
        with self.preprocess_lock:
            items = [self.datamodule.predict_item(rgb) for rgb in images]
        if any(item["image"] is None for item in items):
            return None
        if len(items) == 2:
            items = [{"image1": items[0]["image"], "image2": items[1]["image"]}]
        options = self.options if options is None else options
        return self.model.answer.of(self.model, PredictionDataset.collate_fn(items), options)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def create_app(run: Run | str | Path, limits: ServeLimits | None = None, threads: int | None = None,
               options: dict[str, Any] | None = None) -> FastAPI:
    """The service for a run (a ``Run`` or its folder): loads (exporting first if needed) its ONNX model once.
    ``options``: the answer's ``SERVED_OPTIONS`` every request gets unless it sets its own (query parameters)."""
    run = run if isinstance(run, Run) else Run.open(run)
    limits = limits or ServeLimits()
    exported = ExportedModel(OnnxBackend(ensure_export(run), threads), run.datamodule(setup=False), limits, options,
                             run.layout)
    app = FastAPI(title=f"{exported.metadata.get('task', 'model')} service")
    app.state.exported = exported
    add_error_handlers(app, limits)
    # The last added runs first: the key, then a place in the queue, then the body.
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    app.add_middleware(Admission, capacity=limits.max_concurrency + limits.max_queue)
    if limits.api_key:
        app.add_middleware(ApiKeyAuth, api_key=limits.api_key)

    @app.get("/ping/")
    async def ping() -> dict[str, Any]:  # on the event loop: answers while every worker thread waits for a slot
        return {"status": "ok", "task": exported.metadata.get("task"), "model": str(exported.model.path)}

    add_model_routes(app, exported)
    return app


def add_model_routes(app: FastAPI, exported: ExportedModel) -> None:
    """``/predict`` and ``/compare`` as the export's answer serves them, and the task's own routes."""
    kind = exported.model.answer
    if "/predict" in kind.ROUTES:

        @app.post("/predict")
        @exported.in_slot
        def predict(image: ImageUpload, request: Request) -> dict[str, Any]:
            options = exported.request_options(request)
            record = exported.answer(exported.read_upload(image), options=options)
            return kind.UNUSABLE if record is None else record.json()

    if "/compare" in kind.ROUTES:

        @app.post("/compare")
        @exported.in_slot
        def compare(image1: ImageUpload, image2: ImageUpload) -> dict[str, Any]:
            record = exported.answer(exported.read_upload(image1), exported.read_upload(image2))
            return PairScores.UNUSABLE if record is None else record.json()

    for route in exported.metadata.get("routes", []):
        app.post(route["path"])(exported.in_slot(route_answer(exported, route)))


def route_answer(exported: ExportedModel, route: dict[str, Any]):
    """A task route: ``{<answer>: decided class of the route's output, "probability": p}``."""

    def answer(image: ImageUpload) -> dict[str, Any]:
        record = exported.answer(exported.read_upload(image))
        return {route["answer"]: NO_FACE, "probability": None} if record is None else record.route(route)

    return answer


def add_error_handlers(app: FastAPI, limits: ServeLimits) -> None:
    """Every error as JSON ``{"error": ...}``: unusable uploads, malformed requests, unknown routes, 500s."""

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError):
        return error_response(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        return error_response(422, "send the image as multipart/form-data field 'image' (/compare: 'image1', 'image2')")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = (body_too_large(limits.max_body_bytes) if exc.status_code == 413
                   else f"{request.method} {request.url.path}: {exc.detail}")
        return error_response(exc.status_code, message, exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return error_response(500, "internal error (the traceback is in the service's log)")


class BodyLimit:
    """ASGI middleware: a request body stops being read once past ``limit`` bytes (chunked bodies included),
    and a declared Content-Length above it is refused before any; both 413."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return await error_response(413, body_too_large(self.limit))(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # an HTTPException: FastAPI's form parsing passes it on to the handlers
                raise HTTPException(413)
            return message

        await self.app(scope, counted, send)


def body_too_large(limit: int) -> str:
    return f"request body larger than the {limit} byte limit (2 x max_upload_mb + 64 KiB)"


class Admission:
    """ASGI middleware: at most ``capacity`` POST (inference) requests inside the service, running or
    queued for a slot; one more gets 503 + ``Retry-After`` before its body is read."""

    def __init__(self, app: ASGIApp, capacity: int):
        self.app, self.capacity, self.inside = app, capacity, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if self.inside >= self.capacity:  # one event loop: no lock needed between the check and the count
            busy = error_response(503, f"busy: {self.capacity} requests in progress or queued (max_concurrency + "
                                       f"max_queue); retry in {RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)})
            return await busy(scope, receive, send)
        self.inside += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inside -= 1


class ApiKeyAuth:
    """ASGI middleware: every request but ``OPEN_PATHS`` carries the key (``X-API-Key: <key>`` or
    ``Authorization: Bearer <key>``), compared in constant time; else 401."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app, self.key = app, api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self.authorized(Headers(scope=scope)):
            return await self.app(scope, receive, send)
        denied = error_response(401, "missing or wrong API key: send it as 'X-API-Key: <key>' or "
                                     "'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
        await denied(scope, receive, send)

    def authorized(self, headers: Headers) -> bool:
        bearer = headers.get("authorization", "")
        offered = headers.get("x-api-key") or (bearer[7:] if bearer[:7].lower() == "bearer " else "")
        # Headers decode as latin-1: encoding back gives the bytes the client sent.
        return hmac.compare_digest(offered.encode("latin-1"), self.key)
