"""``ferlab serve``: a web page and an HTTP API that tell the emotion of every face in photos."""

from __future__ import annotations

import argparse

from ferlab.serve import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, DEFAULT_QUEUE


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
        help="requests each worker holds at once (running or waiting); more get 503",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ferlab.serve import ServeSettings, serve
    from ferlab.settings import validate_options

    settings = validate_options(
        ServeSettings,
        model=args.model,
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_bytes=args.max_bytes,
        max_pixels=args.max_pixels,
        queue=args.queue,
    )
    serve(settings)
    return 0
