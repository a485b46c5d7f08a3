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
from starlette.exceptions import HTTPException

from ferlab import __version__
from ferlab.errors import DataError
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
from ferlab.serve.schema import ANALYZE_BODY, ANALYZE_ERRORS, Analysis, Health
from ferlab.serve.upload import (
    MULTIPART_SLACK,
    ServeError,
    http_error_handler,
    internal_error_handler,
    photo_error,
    read_upload,
    serve_error_handler,
)
from ferlab.settings import validate_arguments

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
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
    add_routes(app, service)
    return app


def add_routes(app: FastAPI, service: Service) -> None:
    """The API's endpoints, the page and its static files, answered by ``service``."""

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
    versions (:func:`ferlab.inference.versions.version_facts`), classes, input, and for the shipped model
    its measured accuracy, recall and limits."""
    from ferlab.assets import SHIPPED_NAME, model_card
    from ferlab.inference.versions import version_facts

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
