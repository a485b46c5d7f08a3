"""``ferlab serve``'s HTTP API: endpoints, real photos, every error code, limits, concurrency."""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
skdata = pytest.importorskip("skimage.data")

import anyio  # noqa: E402

with warnings.catch_warnings():  # Starlette 1.x would rather its TestClient used httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from ferlab.errors import FerlabError  # noqa: E402
from ferlab.serve import DEFAULT_MAX_PIXELS, ServeSettings  # noqa: E402
from ferlab.serve.app import create_app  # noqa: E402
from ferlab.settings import validate_arguments  # noqa: E402

EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def encode(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    """A photo (H, W, 3) encoded as ``fmt``."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    return buffer.getvalue()


class FakeRecognizer:
    """Finds no face; ``analyze_array`` blocks until ``release`` is set (at most 10 s)."""

    class_names = EMOTIONS

    def __init__(self, block: bool = False) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        if not block:
            self.release.set()

    def analyze_array(self, rgb):
        self.started.set()
        self.release.wait(10)
        return []


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app()) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def astronaut_png():
    return encode(skdata.astronaut())  # a real portrait, one smiling face, 512x512


def post_raw(client, data: bytes, content_type: str = "image/png"):
    return client.post("/v1/analyze", content=data, headers={"Content-Type": content_type})


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and "\n" not in error["message"]
    return error


def test_health(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_model_facts(client):
    facts = client.get("/v1/model").json()
    assert facts["name"] == "fer2013_cnn"
    assert len(facts["version"]) == 12
    assert facts["classes"] == EMOTIONS
    assert 0 < facts["accuracy"]["public_test"] < 1
    assert set(facts["recall"]["public_test"]) == set(EMOTIONS)
    assert "framing" in facts["input"] and facts["input"]["shape"] == [48, 48]


def test_a_real_portrait_as_raw_body(client, astronaut_png):
    response = post_raw(client, astronaut_png)
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"faces", "model", "image", "seconds"}
    assert answer["image"] == {"width": 512, "height": 512}
    assert answer["model"]["name"] == "fer2013_cnn" and answer["model"]["version"]
    assert answer["seconds"] >= 0
    [face] = answer["faces"]
    assert face["emotion"] in EMOTIONS
    assert list(face["probabilities"]) == EMOTIONS
    assert face["probability"] == max(face["probabilities"].values())
    assert 150 <= face["box"]["x"] <= 200 and 80 <= face["box"]["w"] <= 120


def test_multipart_and_octet_stream_give_the_same_faces(client, astronaut_png):
    raw = post_raw(client, astronaut_png).json()["faces"]
    form = client.post("/v1/analyze", files={"file": ("astronaut.png", astronaut_png, "image/png")})
    assert form.status_code == 200
    assert form.json()["faces"] == raw
    octets = post_raw(client, encode(skdata.astronaut()), "application/octet-stream")
    assert octets.json()["faces"] == raw


def test_curl_data_binary_without_a_content_type_is_read_by_its_bytes(client, astronaut_png):
    # curl --data-binary @photo.jpg sends Content-Type application/x-www-form-urlencoded
    response = post_raw(client, astronaut_png, "application/x-www-form-urlencoded")
    assert response.status_code == 200 and len(response.json()["faces"]) == 1
    assert_error(
        post_raw(client, b"a=1&b=2", "application/x-www-form-urlencoded"), 400, "not_an_image"
    )


def test_jpeg_photo_with_several_faces(client):
    from ferlab.vision.recognizer import to_gray
    from ferlab.vision.scenes import background_photos, place_faces

    face = to_gray(skdata.astronaut())[40:190, 150:300]
    scene, _ = place_faces(
        background_photos()[0], np.stack([face] * 2), [150] * 2, np.random.default_rng(3)
    )
    response = post_raw(client, encode(scene, "JPEG"), "image/jpeg")
    assert response.status_code == 200
    assert len(response.json()["faces"]) == 2
    assert response.json()["image"] == {"width": 640, "height": 480}


def test_a_photo_without_faces_gives_an_empty_list(client):
    response = post_raw(client, encode(skdata.coffee(), "JPEG"), "image/jpeg")
    assert response.status_code == 200
    assert response.json()["faces"] == []


def test_not_an_image(client):
    assert_error(post_raw(client, b"hello", "text/plain"), 415, "not_an_image")
    assert_error(post_raw(client, b"hello, not a PNG"), 400, "not_an_image")
    form = client.post("/v1/analyze", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert_error(form, 400, "not_an_image")


def test_truncated_image(client, astronaut_png):
    error = assert_error(post_raw(client, astronaut_png[:3000]), 400, "not_an_image")
    assert "cannot be read" in error["message"]


def test_unsupported_format(client):
    heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64
    assert_error(post_raw(client, heic, "application/octet-stream"), 415, "unsupported_format")
    assert_error(post_raw(client, b"\0" * 64, "image/heic"), 415, "unsupported_format")
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'
    form = client.post("/v1/analyze", files={"file": ("a.svg", svg, "image/svg+xml")})
    assert_error(form, 415, "unsupported_format")


def test_empty_body(client):
    assert_error(post_raw(client, b""), 400, "empty_body")
    empty_file = client.post("/v1/analyze", files={"file": ("a.png", b"", "image/png")})
    assert_error(empty_file, 400, "empty_body")
    no_file = client.post("/v1/analyze", data={"photo": "x"}, files={"other": ("a", b"x")})
    assert_error(no_file, 400, "empty_body")


def test_byte_limit(astronaut_png):
    app = create_app(max_bytes=len(astronaut_png) - 1, recognizer=FakeRecognizer())
    with TestClient(app) as small:
        assert_error(post_raw(small, astronaut_png), 413, "too_large")
        form = small.post("/v1/analyze", files={"file": ("a.png", astronaut_png, "image/png")})
        assert_error(form, 413, "too_large")
        assert post_raw(small, astronaut_png[:-1]).status_code != 413


def test_pixel_limit(astronaut_png):
    app = create_app(max_pixels=512 * 512 - 1, recognizer=FakeRecognizer())
    with TestClient(app) as small:
        error = assert_error(post_raw(small, astronaut_png), 413, "too_large")
        assert "pixels" in error["message"]
        assert post_raw(small, encode(skdata.astronaut()[:256])).status_code == 200


def call_asgi(app, content_type: bytes, chunk: bytes, content_length: int | None = None):
    """Post an endless body to ``app`` straight through ASGI: (status, chunks the app read)."""
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        read += 1
        if read > 10_000:  # the app read on and on: end the body so the test ends
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [(b"content-type", content_type), (b"host", b"test")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/analyze",
        "raw_path": b"/v1/analyze",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["error"]["code"] == "too_large"
    return start["status"], read


@pytest.mark.parametrize("content_type", [b"image/jpeg", b"multipart/form-data; boundary=xyz"])
def test_byte_limit_stops_reading_an_endless_body(content_type):
    app = create_app(max_bytes=100_000, recognizer=FakeRecognizer())
    status, read = call_asgi(app, content_type, b"\xff" * 10_000)
    assert status == 413
    assert read <= (100_000 + 64 * 1024) // 10_000 + 2  # stopped right after the limit
    status, read = call_asgi(app, content_type, b"\xff" * 10_000, content_length=10**12)
    assert (status, read) == (413, 0)  # refused from its Content-Length, nothing read


def test_concurrent_requests_all_succeed(client, astronaut_png):
    coffee = encode(skdata.coffee(), "JPEG")
    results: list[tuple[int, int]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        photo = astronaut_png if i % 2 == 0 else coffee
        for _ in range(3):
            response = post_raw(client, photo, "image/png" if i % 2 == 0 else "image/jpeg")
            with lock:
                results.append((response.status_code, len(response.json().get("faces", []))))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 24
    assert all(status == 200 for status, _ in results)
    assert sorted(count for _, count in results) == [0] * 12 + [1] * 12


def wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_overload_answers_503_with_retry_after(astronaut_png):
    slow = FakeRecognizer(block=True)
    app = create_app(queue=2, recognizer=slow)
    answers: list[int] = []
    with TestClient(app) as test_client:

        def post() -> None:
            answers.append(post_raw(test_client, astronaut_png).status_code)

        running = threading.Thread(target=post)
        running.start()
        assert slow.started.wait(10)
        waiting = threading.Thread(target=post)  # waits for the one inference thread
        waiting.start()
        wait_until(lambda: app.state.service.in_flight == 2)
        try:
            response = post_raw(test_client, astronaut_png)
            error = assert_error(response, 503, "overloaded")
            assert int(response.headers["Retry-After"]) >= 1
            assert "retry" in error["message"]
        finally:
            slow.release.set()
            running.join(10)
            waiting.join(10)
        assert answers == [200, 200]
        assert app.state.service.in_flight == 0
        assert post_raw(test_client, astronaut_png).status_code == 200


def test_a_failing_model_gives_a_json_500(astronaut_png):
    class Broken(FakeRecognizer):
        def analyze_array(self, rgb):
            raise RuntimeError("boom")

    app = create_app(recognizer=Broken())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        assert_error(post_raw(test_client, astronaut_png), 500, "internal")
        assert app.state.service.in_flight == 0


def test_other_errors_are_json_too(client):
    assert_error(client.get("/v2/analyze"), 404, "not_found")
    assert_error(client.get("/v1/analyze"), 405, "method_not_allowed")


def test_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    assert {"/v1/analyze", "/v1/model", "/healthz"} <= set(schema["paths"])
    analyze = schema["paths"]["/v1/analyze"]["post"]
    content = analyze["requestBody"]["content"]
    image_types = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff"}
    assert {"multipart/form-data", "application/octet-stream"} | image_types <= set(content)
    assert image_types <= set(
        content["multipart/form-data"]["encoding"]["file"]["contentType"].split(", ")
    )
    assert {"200", "400", "408", "413", "415", "429", "503"} <= set(analyze["responses"])


def test_page_and_its_files_come_from_ferlab(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert 'type="file"' in html and 'aria-live="polite"' in html and "<label" in html
    for name in ("/static/app.js", "/static/style.css"):
        assert name in html
        response = client.get(name)
        assert response.status_code == 200
        assert "//cdn" not in response.text and "@import" not in response.text
    assert "getUserMedia" in client.get("/static/app.js").text
    assert "https://" not in html.replace("http://www.w3.org", "")


@pytest.mark.parametrize(
    "settings",
    [{"queue": 0}, {"workers": 0}, {"max_bytes": -1}, {"max_pixels": 0}, {"port": 70000}],
)
def test_bad_settings_are_named(settings):
    name = next(iter(settings))
    with pytest.raises(FerlabError, match=name):
        validate_arguments(ServeSettings, "ServeSettings", **settings)
    if name in ("queue", "max_bytes", "max_pixels"):
        with pytest.raises(FerlabError, match=name):
            create_app(**settings)


def test_settings_round_trip_and_defaults():
    from ferlab.vision.photo import MAX_PIXELS

    settings = ServeSettings(model="m.onnx", port=0, workers=2, queue=3)
    assert ServeSettings.from_json(settings.to_json()) == settings
    assert DEFAULT_MAX_PIXELS == MAX_PIXELS
    assert ServeSettings().host == "127.0.0.1"


def test_cli_reports_bad_settings_in_one_line(capsys):
    from ferlab.cli import main

    assert main(["serve", "--queue", "0"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "ferlab: error: --queue must be greater than or equal to 1, got 0"
    )
    assert main(["serve", "--model", "no-such-model.onnx", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ferlab: error:") and "\n" not in err


def test_importing_ferlab_and_its_cli_loads_no_web_framework():
    code = (
        "import sys, ferlab, ferlab.cli, ferlab.serve; ferlab.cli.build_parser(); "
        "print(sorted({'fastapi', 'uvicorn', 'starlette'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(args: list[str], log_path: Path, seconds: float = 60.0):
    """A real ``ferlab serve ARGS`` on a free loopback port: yields its URL once /healthz answers
    (``seconds`` at most); its process group is stopped on the way out, whatever happens."""
    port = free_port()
    command = [sys.executable, "-c", "import sys; from ferlab.cli import main; sys.exit(main())"]
    command += ["serve", "--port", str(port), *args]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + seconds
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                log_text = log_path.read_text(errors="replace")
                pytest.fail(f"ferlab serve did not start ({process.returncode}):\n{log_text}")
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(15)


def test_a_real_server_with_two_workers(astronaut_png, tmp_path):
    args = ["--workers", "2", "--max-bytes", str(len(astronaut_png))]
    with running_server(args, tmp_path / "serve.log") as url:
        request = urllib.request.Request(
            f"{url}/v1/analyze", data=astronaut_png, headers={"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert len(json.load(response)["faces"]) == 1
        too_big = urllib.request.Request(
            f"{url}/v1/analyze", data=astronaut_png + b"\0", headers={"Content-Type": "image/png"}
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(too_big, timeout=30)
        assert answer.value.code == 413
        assert json.load(answer.value)["error"]["code"] == "too_large"


def test_photo_errors_are_typed_so_the_status_code_never_depends_on_wording(astronaut_png):
    from ferlab.errors import ImageTooLarge, UnknownImageFormat
    from ferlab.serve.upload import photo_error
    from ferlab.vision.photo import read_photo

    cases = {
        "too_large": lambda: read_photo(astronaut_png, max_pixels=512 * 512 - 1),
        "unknown": lambda: read_photo(b"plain text, not a photo"),
        "truncated": lambda: read_photo(astronaut_png[: len(astronaut_png) // 2]),
    }
    errors = {}
    for name, read in cases.items():
        with pytest.raises(FerlabError) as caught:
            read()
        errors[name] = caught.value
    assert isinstance(errors["too_large"], ImageTooLarge)
    assert isinstance(errors["unknown"], UnknownImageFormat)
    assert not isinstance(errors["truncated"], ImageTooLarge | UnknownImageFormat)
    statuses = {name: photo_error(e, b"", "image/png").status for name, e in errors.items()}
    assert statuses == {"too_large": 413, "unknown": 400, "truncated": 400}
    heic = photo_error(errors["unknown"], b"\0\0\0\x18ftypheic", "image/heic")
    assert (heic.status, heic.code) == (415, "unsupported_format")
