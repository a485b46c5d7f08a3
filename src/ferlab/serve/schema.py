"""The shapes ``ferlab serve``'s API answers and accepts, as its OpenAPI schema gives them."""

from __future__ import annotations

from pydantic import BaseModel

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
