"""``ferlab serve``: emotions of the faces in photos over HTTP, with a web page to try it.

Importing this package is cheap: FastAPI and uvicorn load only when an app is built or a server
runs. ``create_app()`` (in :mod:`ferlab.serve.app`) builds the app; :func:`serve` runs it.

Example::

    from ferlab.serve import ServeSettings, serve
    serve(ServeSettings(port=8080, workers=2))
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from ferlab.errors import FerlabError
from ferlab.settings import Section

__all__ = ["ServeSettings", "create_app", "serve"]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000  # ferlab.vision.photo.MAX_PIXELS, without importing NumPy here
DEFAULT_QUEUE = 16
# Slow and idle clients (docs/serve.md gives the reasons for these figures).
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a request's line and headers
DEFAULT_READ_TIMEOUT = 10.0  # seconds between two reads of a body
DEFAULT_MIN_UPLOAD_RATE = 240  # bytes/s a body averages after the grace (Kestrel's figure)
DEFAULT_UPLOAD_GRACE = 5.0  # seconds before the minimum rate applies (Kestrel's figure)
DEFAULT_UPLOAD_MEMORY = 64 * 1024 * 1024  # bytes of bodies still arriving, per worker
DEFAULT_CLIENT_UPLOADS = 8  # bodies arriving at once from one client address, per worker
DEFAULT_CLIENT_CONNECTIONS = 32  # connections open from one client address, per worker
DEFAULT_CONNECTIONS = 512  # connections open in all, per worker
KEEP_ALIVE_SECONDS = 5  # an idle kept-alive connection is closed after this (uvicorn's default)
SETTINGS_VARIABLE = "FERLAB_SERVE_SETTINGS"  # how `serve` hands settings to its worker processes


class ServeSettings(Section):
    """Everything a server needs, checked by the settings schema when made.

    ``model`` is a model file (None: the shipped model); ``workers`` processes each load the model
    once; ``max_bytes`` bounds an upload's size and ``max_pixels`` a photo's width x height;
    ``queue`` bounds the requests each worker holds for analysis (their bodies arrived, waiting
    or running), beyond which it answers 503 at once. Against slow and idle clients:
    ``header_timeout`` seconds for a request's headers, ``read_timeout`` seconds between two
    reads of a body, ``min_upload_rate`` bytes/s a body averages after ``upload_grace``
    seconds, ``upload_memory`` bytes of bodies still arriving, ``max_client_uploads`` bodies
    arriving and ``max_client_connections`` connections from one client address, and
    ``max_connections`` in all (each per worker). Build it with
    :func:`ferlab.settings.validate_arguments` (or ``validate_options`` for command-line values)
    to get one-line errors.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: str | None = None
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    queue: int = Field(DEFAULT_QUEUE, ge=1)
    header_timeout: float = Field(DEFAULT_HEADER_TIMEOUT, gt=0)
    read_timeout: float = Field(DEFAULT_READ_TIMEOUT, gt=0)
    min_upload_rate: int = Field(DEFAULT_MIN_UPLOAD_RATE, ge=1)
    upload_grace: float = Field(DEFAULT_UPLOAD_GRACE, ge=0)
    upload_memory: int = Field(DEFAULT_UPLOAD_MEMORY, ge=1)
    max_client_uploads: int = Field(DEFAULT_CLIENT_UPLOADS, ge=1)
    max_client_connections: int = Field(DEFAULT_CLIENT_CONNECTIONS, ge=1)
    max_connections: int = Field(DEFAULT_CONNECTIONS, ge=1)
    # Test-time augmentation (None: the recognizer's default, flip for ONNX and CNN models).
    tta: Literal["none", "flip"] | None = None
    # A face whose top probability is under this is reported as "uncertain".
    min_confidence: float = Field(0.0, ge=0, le=1)

    def to_json(self) -> str:
        """The settings as one JSON object (how worker processes receive them)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        """Settings from :meth:`to_json`'s text."""
        return cls.model_validate_json(text)

    def app_options(self) -> dict:
        """The keyword arguments of :func:`ferlab.serve.app.create_app` these settings give."""
        return self.model_dump(include=APP_OPTIONS)


APP_OPTIONS = {
    "model",
    "max_bytes",
    "max_pixels",
    "queue",
    "read_timeout",
    "min_upload_rate",
    "upload_grace",
    "upload_memory",
    "max_client_uploads",
    "tta",
    "min_confidence",
}


def serve(settings: ServeSettings) -> None:
    """Run the HTTP server until interrupted.

    With one worker the model loads here first, so a bad model file fails at once with one line;
    with more, uvicorn starts ``workers`` processes that each build the app (and load the model).
    Connections go through :class:`ferlab.serve.guard.GuardedH11Protocol` (header time limit,
    connection caps), requests through the app's :class:`~ferlab.serve.guard.UploadGuard`.
    """
    import uvicorn

    from ferlab.serve.guard import HEADER_BYTES, ConnectionLimits, GuardedH11Protocol, log_config

    limits = ConnectionLimits(
        header_timeout=settings.header_timeout,
        per_client=settings.max_client_connections,
        total=settings.max_connections,
    )
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "log_config": log_config(),
        "timeout_graceful_shutdown": 5,
        "http": functools.partial(GuardedH11Protocol, limits=limits),
        "ws": "none",
        "h11_max_incomplete_event_size": HEADER_BYTES,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }
    if settings.workers == 1:
        from ferlab.serve.app import create_app, load_recognizer

        recognizer = load_recognizer(
            settings.model, settings.max_pixels, settings.tta, settings.min_confidence
        )
        app = create_app(**settings.app_options(), recognizer=recognizer)
        uvicorn.run(app, **options)
        return
    if settings.model is not None and not Path(settings.model).is_file():
        raise FerlabError(f"{settings.model}: no such model file")
    os.environ[SETTINGS_VARIABLE] = settings.to_json()
    uvicorn.run(
        "ferlab.serve.app:app_from_environment",
        factory=True,
        workers=settings.workers,
        **options,
    )


def __getattr__(name: str):
    if name == "create_app":
        from ferlab.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'ferlab.serve' has no attribute {name!r}")
