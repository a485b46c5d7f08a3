"""``ferlab serve``: a web page and an HTTP API that tell the emotion of every face in photos."""

from __future__ import annotations

import argparse

from ferlab.cli.common import add_classification_arguments
from ferlab.serve import (
    DEFAULT_CLIENT_CONNECTIONS,
    DEFAULT_CLIENT_UPLOADS,
    DEFAULT_CONNECTIONS,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_UPLOAD_RATE,
    DEFAULT_QUEUE,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_UPLOAD_GRACE,
    DEFAULT_UPLOAD_MEMORY,
    ServeSettings,
)

# Slow and idle clients: (option, type, default, metavar, help); each is a ServeSettings field.
GUARD_OPTIONS = [
    ("--header-timeout", float, DEFAULT_HEADER_TIMEOUT, "S", "seconds for a request's headers"),
    ("--read-timeout", float, DEFAULT_READ_TIMEOUT, "S", "seconds between two reads of a body"),
    (
        "--min-upload-rate",
        int,
        DEFAULT_MIN_UPLOAD_RATE,
        "N",
        "bytes/s an upload must average after --upload-grace",
    ),
    (
        "--upload-grace",
        float,
        DEFAULT_UPLOAD_GRACE,
        "S",
        "seconds before --min-upload-rate applies",
    ),
    (
        "--upload-memory",
        int,
        DEFAULT_UPLOAD_MEMORY,
        "N",
        "bytes of uploads still arriving, per worker; more get 503",
    ),
    (
        "--max-client-uploads",
        int,
        DEFAULT_CLIENT_UPLOADS,
        "N",
        "uploads arriving at once from one address, per worker; more get 429",
    ),
    (
        "--max-client-connections",
        int,
        DEFAULT_CLIENT_CONNECTIONS,
        "N",
        "connections open from one address, per worker; more get 429",
    ),
    (
        "--max-connections",
        int,
        DEFAULT_CONNECTIONS,
        "N",
        "connections open in all, per worker; more get 503",
    ),
]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="a web page and an HTTP API for emotions in photos",
        description=__doc__
        + " The page is at http://HOST:PORT/, the API at /v1/analyze, its schema at /openapi.json.",
    )
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="model file (.onnx, .npz, .safetensors), or 'shipped' (the default)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="processes, each with the model loaded"
    )
    parser.add_argument(
        "--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N", help="largest upload"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help="largest photo, width x height",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE,
        metavar="N",
        help="requests each worker holds for analysis (uploaded, waiting or running); more get 503",
    )
    add_classification_arguments(parser)
    for option, kind, default, metavar, text in GUARD_OPTIONS:
        parser.add_argument(option, type=kind, default=default, metavar=metavar, help=text)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.serve import serve
    from ferlab.settings import validate_options

    names = set(ServeSettings.model_fields)
    settings = validate_options(
        ServeSettings, **{key: value for key, value in vars(args).items() if key in names}
    )
    serve(settings)
    return 0
