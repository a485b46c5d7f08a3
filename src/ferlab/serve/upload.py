"""Reading a photo upload (multipart field ``file`` or raw body) and the errors it answers."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ferlab.errors import DataError, ImageTooLarge, UnknownImageFormat

MULTIPART_SLACK = 64 * 1024  # form boundaries and part headers around the file, in bytes
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
