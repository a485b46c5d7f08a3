"""``ferlab serve``'s HTTP API driven from its own OpenAPI schema by a property-based tester.

Schemathesis reads the schema the app publishes and sends generated requests to every operation
(valid and invalid bodies, every declared media type, multipart and raw); each response must
not be a server error and must match the schema: a declared status code, the declared content
type, a body that validates against the response model. The bodies of the photo media types are
real photos (crops of a scikit-image photo, encoded in that format), and the same bytes damaged
or cut short, so the run reaches the detector and the classifier, not only the decoders.
"""

import io
import warnings

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis")
skdata = pytest.importorskip("skimage.data")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402
from schemathesis import checks  # noqa: E402

from ferlab.serve.app import create_app  # noqa: E402
from ferlab.serve.schema import IMAGE_TYPES  # noqa: E402
from ferlab.serve.upload import pillow_media_types  # noqa: E402

# A bounded run: up to 150 requests per operation and mode (valid and invalid requests), about
# 300 in all since the GET operations take no input (the outside run sent ~10,000).
EXAMPLES_PER_OPERATION = 150
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
PILLOW_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/avif": "AVIF",
}
ASTRONAUT = skdata.astronaut()  # (512, 512, 3) uint8, one face


@st.composite
def photo_bytes(draw, fmt: str) -> bytes:
    """A crop of the astronaut photo (8 to 512 pixels a side) encoded as ``fmt``, sometimes with
    a few bytes changed or its end cut off."""
    size = draw(st.integers(8, 512))
    top = draw(st.integers(0, 512 - size))
    left = draw(st.integers(0, 512 - size))
    buffer = io.BytesIO()
    Image.fromarray(ASTRONAUT[top : top + size, left : left + size]).save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none", "none", "flip", "cut"]))
    if damage == "flip":
        for place in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[place] ^= 0xFF
    elif damage == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return bytes(data)


def register_photo_strategies() -> None:
    """Bodies for each image media type the schema declares: real photos in the formats this
    Pillow writes, random bytes for the others and for ``application/octet-stream``."""
    writable = pillow_media_types()
    for media in IMAGE_TYPES:
        fmt = PILLOW_FORMATS.get(media)
        strategy = photo_bytes(fmt) if fmt and media in writable else st.binary(max_size=4096)
        schemathesis.openapi.media_type(media, strategy)
    schemathesis.openapi.media_type(
        "application/octet-stream", st.one_of(photo_bytes("PNG"), st.binary(max_size=4096))
    )


@pytest.fixture(scope="module")
def api_schema():
    """The schema of an app that runs the shipped model and the default detector."""
    register_photo_strategies()
    from ferlab.vision.recognizer import EmotionRecognizer

    app = create_app(recognizer=EmotionRecognizer(None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return schemathesis.openapi.from_asgi("/openapi.json", app)


def check_response(case) -> None:
    """Send ``case`` and check its response against the schema and ferlab's own promises."""
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code < 500
    if response.status_code == 200 and case.path == "/v1/analyze":
        body = response.json()
        assert body["image"]["width"] > 0 and body["image"]["height"] > 0
        for face in body["faces"]:
            assert np.isclose(sum(face["probabilities"].values()), 1.0, atol=1e-3)


def test_every_generated_request_gets_a_response_the_schema_allows(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {operation.path for operation in operations} >= {"/v1/analyze", "/v1/model"}
    # Invalid requests only where there is input to get wrong (the GETs take none).
    runs = [(operation, schemathesis.GenerationMode.POSITIVE) for operation in operations] + [
        (operation, schemathesis.GenerationMode.NEGATIVE)
        for operation in operations
        if operation.method.upper() == "POST"
    ]
    for operation, mode in runs:
        run = settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,  # the same requests every run
            suppress_health_check=list(HealthCheck),
            database=None,
        )(given(case=operation.as_strategy(mode))(lambda case: check_response(case)))
        run()
