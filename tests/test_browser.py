"""``ferlab serve``'s page in a real browser: Debian's chromium, driven by Playwright.

A real ``ferlab serve`` process answers; the page gets a real photo through its file input, then
runs its webcam mode on Chromium's fake camera (a test pattern, no face). Set
``FERLAB_UPDATE_SCREENSHOT=1`` to also write the page's picture to ``docs/serve-page.png``.
"""

import io
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no chromium on the PATH (Debian: apt-get install chromium)", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
skdata = pytest.importorskip("skimage.data")

from test_serve import running_server  # noqa: E402  (tests/ is on sys.path, see conftest.py)

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "serve-page.png"
EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server([], tmp_path_factory.mktemp("serve") / "serve.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
            timeout=WAIT_MS,
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))

    def check_request(request) -> None:  # everything must come from ferlab itself
        if not request.url.startswith((server, "blob:", "data:")):
            page.problems.append(f"request off the server: {request.url}")

    page.on("request", check_request)
    page.goto(f"{server}/")
    try:
        yield page
    finally:
        context.close()


def box_color_pixels(page) -> int:
    """How many canvas pixels have the first face's box colour (#0b57d0)."""
    return page.evaluate(
        """() => {
            const canvas = document.getElementById("canvas");
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let count = 0;
            for (let i = 0; i < data.length; i += 4) {
                if (data[i] === 11 && data[i + 1] === 87 && data[i + 2] === 208) count++;
            }
            return count;
        }"""
    )


def canvas_size(page) -> list[int]:
    """The canvas's drawing size [width, height] in pixels."""
    return page.evaluate(
        "() => { const c = document.getElementById('canvas'); return [c.width, c.height]; }"
    )


def save_screenshot(picture: bytes, path: Path) -> None:
    """The page's PNG screenshot, reduced to 256 colours so it stays small."""
    image = Image.open(io.BytesIO(picture)).convert("RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def test_a_photo_gets_boxes_labels_and_bars(page, tmp_path):
    expect = sync_api.expect
    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    expect(page.locator("#model-facts")).to_contain_text("fer2013_cnn")
    assert box_color_pixels(page) == 0
    page.set_input_files("#file", str(photo))
    expect(page.locator("#status")).to_contain_text("1 face found")
    faces = page.locator("#faces > li")
    expect(faces).to_have_count(1)
    text = faces.first.inner_text()
    assert text.startswith("Face 1: ")
    assert sum(name in text for name in EMOTIONS) == len(EMOTIONS)  # one bar per emotion
    assert faces.first.locator(".bar").count() == len(EMOTIONS)
    size = canvas_size(page)
    assert size == [512, 512]  # the photo drawn at its own size
    assert box_color_pixels(page) > 200  # the face's box and label are drawn
    assert page.problems == []
    picture = page.screenshot(full_page=True)
    save_screenshot(picture, tmp_path / "serve-page.png")
    if os.environ.get("FERLAB_UPDATE_SCREENSHOT") == "1":
        save_screenshot(picture, SCREENSHOT)
        assert SCREENSHOT.stat().st_size < 300_000


def test_webcam_mode_analyses_frames_from_the_keyboard(page):
    expect = sync_api.expect
    button = page.locator("#webcam-toggle")
    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-pressed", "true")
    # Chromium's fake camera shows a test pattern: frames are analysed and no face is found.
    page.wait_for_function(
        "() => Number(document.getElementById('status').dataset.frames || 0) >= 2",
        timeout=WAIT_MS,
    )
    expect(page.locator("#status")).to_contain_text("No face found")
    expect(page.locator("#faces > li")).to_have_count(0)
    assert canvas_size(page) == [640, 480]
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#status")).to_have_text("Webcam off.")
    assert page.problems == []


def test_a_file_that_is_not_a_photo_is_reported(page, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    page.set_input_files("#file", str(notes))
    status = page.locator("#status")
    sync_api.expect(status).to_contain_text("not_an_image")
    assert "error" in status.get_attribute("class")
