"""The web app: ``POST /v1/analyze``, ``GET /v1/model``, ``GET /healthz`` and the page at ``/``.

Each worker process loads the model once (when the app starts). A request's body is received
whole by :class:`~ferlab.serve.guard.UploadGuard` (time and rate limits, per-address and memory
caps) before the endpoint runs; photos are then decoded and analysed in one thread per worker, off
the event loop. A worker holds at most ``queue`` requests for analysis at once (their bodies
arrived, waiting or running) and answers 503 with ``Retry-After`` beyond that, so the analysis
stage holds at most ``queue x max_bytes`` bytes of photos and the upload stage ``upload_memory``.
Errors are JSON ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ferlab import __version__
from ferlab.errors import DataError, ImageTooLarge, UnknownImageFormat
from ferlab.serve import (
    DEFAULT_CLIENT_UPLOADS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_UPLOAD_RATE,
    DEFAULT_QUEUE,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_UPLOAD_GRACE,
    DEFAULT_UPLOAD_MEMORY,
    SETTINGS_VARIABLE,
    ServeSettings,
)
from ferlab.serve.guard import RETRY_AFTER_SECONDS, UploadGuard
from ferlab.settings import validate_arguments

MULTIPART_SLACK = 64 * 1024  # form boundaries and part headers around the file, in bytes
# The image types /v1/analyze takes (any other image/* type Pillow decodes is read too).
IMAGE_TYPES = [
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
    "image/avif",
]
# Sent as a raw body but read by sniffing its bytes: curl --data-binary's default Content-Type.
SNIFFED_TYPES = ("", "application/octet-stream", "application/x-www-form-urlencoded")
# Formats people send that Pillow cannot decode, by their first bytes: answered 415, not 400.
UNSUPPORTED_SIGNATURES = {
    b"ftypheic": "HEIC",
    b"ftypheix": "HEIC",
    b"ftyphevc": "HEIC",
    b"ftypmif1": "HEIF",
    b"JXL ": "JPEG XL",
    b"<svg": "SVG",
    b"<?xml": "SVG",
}
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class ServeError(Exception):
    """An error answered as JSON: a stable ``code``, an HTTP ``status`` and a one-line message."""

    def __init__(
        self, code: str, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.headers = headers or {}


# Response shapes, for the OpenAPI schema at /openapi.json.
class Box(BaseModel):
    x: int
    y: int
    w: int
    h: int


class FaceOut(BaseModel):
    box: Box
    score: float
    # {name: [x, y]} for the detector's landmarks (right_eye, left_eye, nose, mouth, right_ear,
    # left_ear); empty when the detector gives none
    landmarks: dict[str, list[float]]
    emotion: str
    probability: float
    probabilities: dict[str, float]


class ModelRef(BaseModel):
    name: str
    version: str


class ImageSize(BaseModel):
    width: int
    height: int


class Analysis(BaseModel):
    faces: list[FaceOut]
    model: ModelRef
    image: ImageSize
    seconds: float


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str


ANALYZE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            },
            "encoding": {"file": {"contentType": ", ".join(IMAGE_TYPES)}},
        },
        **{name: {"schema": {"type": "string", "format": "binary"}} for name in IMAGE_TYPES},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
ANALYZE_ERRORS = {
    400: {"model": ErrorOut, "description": "not_an_image, empty_body or bad_request"},
    408: {"model": ErrorOut, "description": "timeout: the headers or the upload came too slowly"},
    413: {"model": ErrorOut, "description": "too_large: too many bytes or pixels"},
    415: {"model": ErrorOut, "description": "not_an_image or unsupported_format"},
    429: {
        "model": ErrorOut,
        "description": "too_many_requests: too many connections or uploads from one address; "
        "retry after Retry-After seconds",
    },
    431: {"model": ErrorOut, "description": "headers_too_large"},
    503: {"model": ErrorOut, "description": "overloaded: retry after Retry-After seconds"},
}


@dataclass
class Service:
    """One worker's state: the recognizer, the limits and the count of requests it holds."""

    model: str | None
    max_bytes: int
    max_pixels: int
    queue: int
    recognizer: object | None = None
    model_ref: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    in_flight: int = 0
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))

    def attach(self, recognizer: object) -> None:
        """Use ``recognizer`` (anything with ``analyze_array`` and ``class_names``)."""
        self.recognizer = recognizer
        self.facts = model_facts(
            self.model,
            list(getattr(recognizer, "class_names", [])),
            getattr(recognizer, "detector", None),
        )
        self.model_ref = {"name": self.facts["name"], "version": self.facts["version"]}

    def analyze(self, data: bytes, declared: str) -> dict:
        """The JSON answer for one encoded photo; raises ServeError for photos it cannot read."""
        from ferlab.vision.photo import read_photo

        start = time.perf_counter()
        try:
            rgb = read_photo(data, max_pixels=self.max_pixels)
        except DataError as exc:
            raise photo_error(exc, data, declared) from None
        faces = self.recognizer.analyze_array(rgb)
        return {
            "faces": [face.to_dict() for face in faces],
            "model": self.model_ref,
            "image": {"width": int(rgb.shape[1]), "height": int(rgb.shape[0])},
            "seconds": round(time.perf_counter() - start, 4),
        }


def create_app(
    *,
    model: str | os.PathLike | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    queue: int = DEFAULT_QUEUE,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    min_upload_rate: int = DEFAULT_MIN_UPLOAD_RATE,
    upload_grace: float = DEFAULT_UPLOAD_GRACE,
    upload_memory: int = DEFAULT_UPLOAD_MEMORY,
    max_client_uploads: int = DEFAULT_CLIENT_UPLOADS,
    recognizer: object | None = None,
    tta: str | None = None,
    min_confidence: float = 0.0,
) -> FastAPI:
    """The ferlab web app.

    ``model`` is a model file (None: the shipped model), loaded once when the app starts unless a
    ready ``recognizer`` (an :class:`~ferlab.vision.recognizer.EmotionRecognizer` or anything with
    ``analyze_array(rgb)`` and ``class_names``) is given. ``max_bytes`` bounds an upload,
    ``max_pixels`` a photo's width x height, ``queue`` the requests held for analysis at once;
    the upload limits are :class:`~ferlab.serve.ServeSettings`' (header time limits and
    connection caps belong to the server: :func:`ferlab.serve.serve`); ``tta`` is the loaded
    recognizer's test-time augmentation (``none`` or ``flip``; None: its default) and
    ``min_confidence`` the top probability under which a face is ``"uncertain"``.
    """
    model = None if model is None else str(model)
    validate_arguments(
        ServeSettings, "create_app", model=model, max_bytes=max_bytes, max_pixels=max_pixels,
        queue=queue, read_timeout=read_timeout, min_upload_rate=min_upload_rate,
        upload_grace=upload_grace, upload_memory=upload_memory,
        max_client_uploads=max_client_uploads, tta=tta, min_confidence=min_confidence,
    )  # fmt: skip
    service = Service(model, max_bytes, max_pixels, queue)
    if recognizer is not None:
        service.attach(recognizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if service.recognizer is None:
            recognizer = await anyio.to_thread.run_sync(
                load_recognizer, model, max_pixels, tta, min_confidence
            )
            service.attach(recognizer)
        yield

    app = FastAPI(
        title="ferlab",
        version=__version__,
        description="Emotions of the faces in photos, by ferlab's FER2013 model.",
        lifespan=lifespan,
        docs_url=None,  # the Swagger and ReDoc pages load scripts from CDNs; the schema stays
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(
        UploadGuard,
        max_body=max_bytes + MULTIPART_SLACK,
        memory=upload_memory,
        per_client=max_client_uploads,
        read_timeout=read_timeout,
        min_rate=min_upload_rate,
        grace=upload_grace,
    )
    app.add_exception_handler(ServeError, serve_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(Exception, internal_error_handler)

    @app.post(
        "/v1/analyze",
        response_model=Analysis,
        responses=ANALYZE_ERRORS,
        openapi_extra={"requestBody": ANALYZE_BODY},
        summary="Faces and emotions in one photo",
    )
    async def analyze(request: Request) -> JSONResponse:
        """Send a photo as the multipart form field ``file`` or as the raw body (``image/*`` or
        ``application/octet-stream``). A photo without faces gives an empty ``faces`` list."""
        data, declared = await read_upload(request, service.max_bytes)  # it has fully arrived
        if service.in_flight >= service.queue:
            raise ServeError(
                "overloaded",
                503,
                f"the server holds {service.queue} requests already; retry shortly",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        service.in_flight += 1
        try:
            result = await anyio.to_thread.run_sync(
                service.analyze, data, declared, limiter=service.limiter
            )
        finally:
            service.in_flight -= 1
        return JSONResponse(result)

    @app.get("/v1/model", summary="The model's classes, accuracy, recall and input framing")
    async def model_info() -> JSONResponse:
        return JSONResponse(service.facts)

    @app.get("/healthz", response_model=Health, summary="Whether the server is up")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(static_dir() / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    return app


def app_from_environment() -> FastAPI:
    """The app built from the settings that :func:`ferlab.serve.serve` left in the environment
    (uvicorn calls this in each worker process)."""
    text = os.environ.get(SETTINGS_VARIABLE)
    settings = ServeSettings.from_json(text) if text else ServeSettings()
    return create_app(**settings.app_options())


def load_recognizer(
    model: str | None, max_pixels: int, tta: str | None = None, min_confidence: float = 0.0
) -> object:
    """The emotion recognizer for ``model`` (None: the shipped model), one inference thread."""
    from ferlab.vision.recognizer import EmotionRecognizer

    return EmotionRecognizer(model, max_pixels=max_pixels, tta=tta, min_confidence=min_confidence)


def static_dir() -> Path:
    """The folder of the page's HTML, CSS and JavaScript installed with ferlab."""
    return Path(str(resources.files("ferlab.serve").joinpath("static")))


def model_facts(model: str | None, class_names: list[str], detector: object = None) -> dict:
    """What ``GET /v1/model`` answers: the model's name, version (the file's SHA-256, 12 digits)
    and sha256, ferlab's version, the detector's name and version, ONNX Runtime's and OpenCV's
    versions (:func:`ferlab.versions.version_facts`), classes, input, and for the shipped model
    its measured accuracy, recall and limits."""
    from ferlab.assets import SHIPPED_NAME, model_card
    from ferlab.versions import version_facts

    versions = version_facts(model, detector)
    identity = versions.pop("model")
    facts: dict = {key: identity[key] for key in ("name", "version", "sha256")} | versions
    if identity["file"] == SHIPPED_NAME:
        card = model_card()
        for key in ("classes", "input", "accuracy", "recall", "limits"):
            facts[key] = card.get(key)
    else:
        facts.update(classes=None, input=None, accuracy=None, recall=None, limits=None)
    if class_names:
        facts["classes"] = class_names
    return facts


def media_type(content_type: str) -> str:
    """The lower-case media type of a Content-Type header, without parameters."""
    return content_type.split(";", 1)[0].strip().lower()


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The photo's bytes and declared media type, from a multipart form (field ``file``) or the
    raw body; never reads more than ``max_bytes`` (plus the form's framing)."""
    declared = media_type(request.headers.get("content-type", ""))
    if declared == "multipart/form-data":
        body = await read_body(request, max_bytes + MULTIPART_SLACK)
        return await file_from_form(request, body, max_bytes)
    if declared in SNIFFED_TYPES or declared.startswith("image/"):
        body = await read_body(request, max_bytes)
        if not body:
            raise ServeError("empty_body", 400, "the request has no photo in its body")
        return body, declared
    raise ServeError(
        "not_an_image",
        415,
        f"Content-Type {declared} is not an image: send the photo as image/*, "
        "application/octet-stream, or the multipart form field 'file'",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body (already received whole by the UploadGuard); ServeError 413 when it has
    more than ``limit`` bytes (at once when Content-Length says so)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large_bytes(int(length), limit)
    try:
        body = await request.body()
    except ClientDisconnect:
        raise ServeError("bad_request", 400, "the client left before sending its photo") from None
    if len(body) > limit:
        raise too_large_bytes(len(body), limit)
    return body


def too_large_bytes(size: int, limit: int) -> ServeError:
    return ServeError(
        "too_large", 413, f"the upload has {size:,} bytes or more, more than the {limit:,} accepted"
    )


async def file_from_form(request: Request, body: bytes, max_bytes: int) -> tuple[bytes, str]:
    """The bytes and declared media type of the form field ``file`` in a multipart ``body``."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ServeError(
                    "empty_body", 400, "the form has no file: send the photo as the field 'file'"
                )
            data = await upload.read()
            declared = media_type(upload.content_type or "")
    except HTTPException as exc:  # Starlette's answer to a malformed form
        raise ServeError("bad_request", 400, f"malformed multipart form: {exc.detail}") from None
    if not data:
        raise ServeError("empty_body", 400, "the uploaded file is empty")
    if len(data) > max_bytes:
        raise too_large_bytes(len(data), max_bytes)
    return data, declared


def photo_error(error: DataError, data: bytes, declared: str) -> ServeError:
    """The ServeError for read_photo's ``error`` about ``data`` (sent as ``declared``): 413 for
    too many pixels, 415 for a known format ferlab cannot read, else 400."""
    detail = str(error).split(": ", 1)[-1]
    if isinstance(error, ImageTooLarge):
        return ServeError("too_large", 413, f"the photo has too many pixels: {detail}")
    if not isinstance(error, UnknownImageFormat):
        return ServeError("not_an_image", 400, f"the photo cannot be read: {detail}")
    known = unsupported_format(data, declared)
    if known:
        return ServeError(
            "unsupported_format",
            415,
            f"{known} photos are not supported: send JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF",
        )
    return ServeError("not_an_image", 400, "the data is not an image ferlab can read")


def unsupported_format(data: bytes, declared: str) -> str:
    """The name of an image format Pillow cannot read that ``data`` is in, or that the client
    declared (an ``image/*`` type Pillow does not know); empty when there is none."""
    head = data[:32]
    for signature, name in UNSUPPORTED_SIGNATURES.items():
        if signature in head:
            return name
    if declared.startswith("image/") and declared not in pillow_media_types():
        return declared
    return ""


def pillow_media_types() -> set[str]:
    """The image media types the installed Pillow can decode."""
    from PIL import Image

    Image.init()
    return {mime for mime in Image.MIME.values() if mime.startswith("image/")}


async def serve_error_handler(request: Request, exc: ServeError) -> JSONResponse:
    return error_response(exc.code, exc.status, exc.message, exc.headers)


async def http_error_handler(request: Request, exc: HTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        codes.get(exc.status_code, "http_error"),
        exc.status_code,
        str(exc.detail),
        dict(exc.headers or {}),
    )


async def internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response("internal", 500, "the server failed on this request; see its log")


def error_response(
    code: str, status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``{"error": {"code": code, "message": message}}`` with an HTTP ``status``."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )
