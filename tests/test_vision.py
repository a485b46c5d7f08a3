"""Emotions from real photos and videos: detection, input kinds, framing, CLI, bad input."""

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from ferlab import EmotionRecognizer  # noqa: E402
from ferlab.cli import main  # noqa: E402
from ferlab.errors import DataError, FerlabError  # noqa: E402
from ferlab.vision import Detection, HaarFaceDetector, read_photo  # noqa: E402
from ferlab.vision.detect import LANDMARKS  # noqa: E402
from ferlab.vision.framing import face_crop  # noqa: E402
from ferlab.vision.recognizer import to_gray  # noqa: E402
from ferlab.vision.scenes import background_photos, place_faces  # noqa: E402

EMOTIONS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


@pytest.fixture(scope="module")
def recognizer():
    return EmotionRecognizer()


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()  # a real portrait photo, one face, RGB (512, 512, 3)


def astronaut_face(astronaut):
    """The astronaut's face with FER2013-like margins, grayscale (150, 150)."""
    return to_gray(astronaut)[40:190, 150:300]


def test_one_face_in_a_real_portrait(recognizer, astronaut):
    faces = recognizer.analyze(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert 150 <= face.box.x <= 200 and 40 <= face.box.y <= 90 and 80 <= face.box.w <= 120
    assert face.emotion == "happy"  # she smiles broadly
    assert list(face.probabilities) == EMOTIONS
    assert sum(face.probabilities.values()) == pytest.approx(1, abs=1e-4)
    assert face.probability == max(face.probabilities.values())


@pytest.mark.parametrize("count", [2, 3])
def test_several_faces_on_a_real_background(recognizer, astronaut, count):
    face = astronaut_face(astronaut)
    scene, boxes = place_faces(
        background_photos()[0], np.stack([face] * count), [150] * count, np.random.default_rng(3)
    )
    faces = recognizer.analyze(scene)
    assert len(faces) == count
    for x, y, w, h in boxes:  # every pasted face has a box inside it
        assert any(
            x <= f.box.x <= f.box.x + f.box.w <= x + w + 5
            and y <= f.box.y <= f.box.y + f.box.h <= y + h + 5
            for f in faces
        )


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_no_face_in_real_photos_without_people(recognizer, name):
    assert recognizer.analyze(getattr(skdata, name)()) == []


def test_every_input_kind_gives_the_same_faces(recognizer, astronaut, tmp_path):
    expected = recognizer.analyze(astronaut)
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="PNG")
    for source in (path, str(path), buffer.getvalue(), Image.fromarray(astronaut), astronaut):
        assert recognizer.analyze(source) == expected


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "LA"])
def test_image_modes_become_rgb_and_keep_the_face(recognizer, astronaut, tmp_path, mode):
    image = Image.fromarray(astronaut)
    if mode == "I;16":
        image = Image.fromarray(to_gray(astronaut).astype(np.uint16) * 257)
    else:
        image = image.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    if mode == "CMYK":
        image.save(tmp_path / f"x{suffix}")
    else:
        image.save(tmp_path / f"x{suffix}")
    rgb = read_photo(tmp_path / f"x{suffix}")
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8
    assert len(recognizer.analyze(rgb)) == 1
    if mode == "I;16":  # 16-bit values are scaled, not clipped
        assert np.abs(rgb[..., 0].astype(int) - to_gray(astronaut)).max() <= 1


def test_gray_and_rgba_arrays(astronaut):
    gray = to_gray(astronaut)
    assert (read_photo(gray)[..., 1] == gray).all()
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert (read_photo(rgba) == astronaut).all()
    rgba[..., 3] = 0  # fully transparent becomes white
    assert (read_photo(rgba) == 255).all()
    with pytest.raises(DataError, match="must be"):
        read_photo(np.zeros((4, 4, 2), np.uint8))


def test_exif_orientation_is_respected(recognizer, astronaut, tmp_path):
    # Stored rotated, with the EXIF tag that tells viewers to turn it upright (6: rotate 90 CW).
    stored = Image.fromarray(astronaut).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    upright = recognizer.analyze(tmp_path / "rotated.jpg")
    assert len(upright) == 1 and abs(upright[0].box.roll) < 20
    stored.save(tmp_path / "no_tag.jpg", quality=95)
    # Without the tag the face lies on its side: the eyes the detector gives say so.
    assert all(abs(abs(f.box.roll) - 90) < 25 for f in recognizer.analyze(tmp_path / "no_tag.jpg"))


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    Image.new("L", (400, 300)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="120,000 pixels, more than the 100,000 accepted"):
        read_photo(tmp_path / "big.png", max_pixels=100_000)
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 megapixels, a small file
    assert (tmp_path / "bomb.png").stat().st_size < 1_000_000
    with pytest.raises(DataError, match="bomb.png"):
        read_photo(tmp_path / "bomb.png")


def test_face_crop_frames_a_square_and_pads_at_edges(astronaut):
    gray = to_gray(astronaut)
    crop = face_crop(gray, Detection(177, 66, 95, 95, 1.0), scale=1.0)
    expected = cv2.resize(gray[66:161, 177:272], (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(crop, expected)
    corner = face_crop(gray, Detection(0, 0, 40, 40, 1.0), scale=2.0)  # half outside the photo
    assert corner.shape == (48, 48)
    assert (corner[:11, :11] == gray[0, 0]).all()  # the corner pixel repeated


def test_detector_settings_are_validated():
    with pytest.raises(FerlabError, match="scale_factor"):
        HaarFaceDetector(scale_factor=1.0)
    with pytest.raises(FerlabError, match="unknown detector 'yolo'"):
        EmotionRecognizer(detector="yolo")


def make_video(path, frames, fps=10, truncate=False):
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1]
    )
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])


def test_video_rows_and_annotated_outputs(astronaut, tmp_path, capsys):
    coffee = np.asarray(Image.fromarray(skdata.coffee()).resize((512, 512)))
    frames = [astronaut] * 10 + [coffee] * 10
    make_video(tmp_path / "clip.mp4", frames)
    Image.fromarray(astronaut).save(tmp_path / "photo.jpg")
    out = tmp_path / "annotated"
    code = main(
        ["predict", str(tmp_path / "clip.mp4"), str(tmp_path / "photo.jpg"),
         "--every", "5", "--format", "jsonl", "--annotate", str(out)]
    )  # fmt: skip
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    video = [r for r in rows if r["file"] == str(tmp_path / "clip.mp4")]  # the path as given
    assert [r["frame"] for r in video] == [0, 5, 10, 15]
    assert [r["time"] for r in video] == [0.0, 0.5, 1.0, 1.5]
    assert [r["face"] for r in video] == [0, 0, None, None]  # the astronaut, then coffee
    assert [r["emotion"] for r in video][2:] == ["", ""]
    photo = [r for r in rows if r["file"] == str(tmp_path / "photo.jpg")]
    assert len(photo) == 1 and photo[0]["emotion"] == "happy"
    drawn = np.asarray(Image.open(out / "photo.jpg.annotated.png"))
    box = photo[0]["box"]
    assert drawn.shape == astronaut.shape
    assert (drawn[box["y"] + box["h"] // 2, box["x"]] == (255, 200, 0)).all()  # the box's edge
    capture = cv2.VideoCapture(str(out / "clip.mp4.annotated.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    capture.release()


def test_output_formats_and_top_k(astronaut, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    assert main(["predict", "a.png", "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(
        r"a\.png  face 0 at \(\d+,\d+ \d+x\d+\) score [01]\.\d\d eyes \(\d+,\d+\) \(\d+,\d+\)  "
        r"happy 0\.\d\d  \w+ 0\.\d\d",
        line,
    )
    assert main(["predict", str(tmp_path / "a.png"), "--format", "csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split(",")[-7:] == EMOTIONS
    assert sum(float(v) for v in row.split(",")[-7:]) == pytest.approx(1, abs=1e-4)
    assert main(["predict", str(tmp_path / "a.png"), "--format", "json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["emotion"] == "happy" and set(record["box"]) == {"x", "y", "w", "h"}
    assert 0.5 <= record["score"] <= 1 and set(record["landmarks"]) == set(LANDMARKS)
    eyes = record["landmarks"]["right_eye"], record["landmarks"]["left_eye"]
    box = record["box"]
    for x, y in eyes:  # both eyes inside the box's upper half
        assert box["x"] < x < box["x"] + box["w"] and box["y"] < y < box["y"] + box["h"] / 2
    assert eyes[0][0] < eyes[1][0]  # the person's right eye is on the image's left


def test_folders_recursive_and_no_face(astronaut, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    Image.fromarray(astronaut).save(tmp_path / "a.jpg")
    Image.fromarray(skdata.coffee()).save(tmp_path / "sub" / "b.jpg")
    assert main(["predict", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{tmp_path}/a.jpg  face 0")
    assert main(["predict", str(tmp_path), "--recursive"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{tmp_path}/sub/b.jpg  no face found"


def test_bad_input_is_one_line_and_non_zero(tmp_path, capsys):
    (tmp_path / "fake.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "notes.txt").write_text("hello")
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")
    make_video(tmp_path / "cut.mp4", [skdata.astronaut()] * 5, truncate=True)
    (tmp_path / "empty").mkdir()
    cases = {
        "fake.jpg": "not an image, or an unsupported format",
        "bomb.png": "bomb.png",
        "cut.mp4": "cut.mp4",
        "notes.txt": "not an image, or an unsupported format",
        "missing.png": "no such file or folder",
        "empty": "no image or video found",
    }
    for name, message in cases.items():
        assert main(["predict", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("ferlab: error:") and message in err and "\n" not in err, err


def test_bad_files_inside_a_folder_are_skipped_with_a_warning(astronaut, tmp_path, capsys):
    Image.fromarray(astronaut).save(tmp_path / "good.png")
    (tmp_path / "fake.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "readme.txt").write_text("hello")
    assert main(["predict", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{tmp_path}/good.png  face 0")
    assert f"skipped 1 file(s): {tmp_path}/readme.txt" in captured.err
    assert "fake.jpg: not an image" in captured.err and "Traceback" not in captured.err


def test_crops_without_detection_use_any_model(tmp_path):
    from ferlab.nn import FullyConnectedNet

    model = FullyConnectedNet(8 * 8 * 3, [4], 3, seed=0)
    model.class_names, model.input_shape = ["a", "b", "c"], (8, 8, 3)
    model.save(tmp_path / "m.npz")
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    faces = EmotionRecognizer(tmp_path / "m.npz", detector="none").analyze(image)
    resized = np.asarray(Image.fromarray(image).resize((8, 8), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(
        list(faces[0].probabilities.values()), model.predict_proba(resized[None])[0], rtol=1e-5
    )
    with pytest.raises(FerlabError, match="use detector 'none'"):
        EmotionRecognizer(tmp_path / "m.npz")
