"""``ferlab serve``: emotions of the faces in photos over HTTP, with a web page to try it.

Importing this package is cheap: FastAPI and uvicorn load only when an app is built or a server
runs. ``create_app()`` (in :mod:`ferlab.serve.app`) builds the app; :func:`serve` runs it.

Example::

    from ferlab.serve import ServeSettings, serve
    serve(ServeSettings(port=8080, workers=2))
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ConfigDict, Field

from ferlab.errors import FerlabError
from ferlab.settings import Section

__all__ = ["ServeSettings", "create_app", "serve"]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000  # ferlab.vision.photo.MAX_PIXELS, without importing NumPy here
DEFAULT_QUEUE = 16
SETTINGS_VARIABLE = "FERLAB_SERVE_SETTINGS"  # how `serve` hands settings to its worker processes


class ServeSettings(Section):
    """Everything a server needs, checked by the settings schema when made.

    ``model`` is a model file (None: the shipped model); ``workers`` processes each load the model
    once; ``max_bytes`` bounds an upload's size and ``max_pixels`` a photo's width x height;
    ``queue`` bounds the requests each worker holds at once (running or waiting), beyond which it
    answers 503 at once. Build it with :func:`ferlab.settings.validate_arguments` (or
    ``validate_options`` for command-line values) to get one-line errors.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: str | None = None
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_bytes: int = Field(DEFAULT_MAX_BYTES, ge=1)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    queue: int = Field(DEFAULT_QUEUE, ge=1)

    def to_json(self) -> str:
        """The settings as one JSON object (how worker processes receive them)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        """Settings from :meth:`to_json`'s text."""
        return cls.model_validate_json(text)


def serve(settings: ServeSettings) -> None:
    """Run the HTTP server until interrupted.

    With one worker the model loads here first, so a bad model file fails at once with one line;
    with more, uvicorn starts ``workers`` processes that each build the app (and load the model).
    """
    import uvicorn

    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "timeout_graceful_shutdown": 5,
    }
    if settings.workers == 1:
        from ferlab.serve.app import create_app
        from ferlab.vision.recognizer import EmotionRecognizer

        recognizer = EmotionRecognizer(settings.model, max_pixels=settings.max_pixels)
        app = create_app(
            model=settings.model,
            max_bytes=settings.max_bytes,
            max_pixels=settings.max_pixels,
            queue=settings.queue,
            recognizer=recognizer,
        )
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
