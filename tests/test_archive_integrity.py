"""A damaged archive, cache file or published checksum is refused or read exactly (issue 45).

Every archive is built here from real PNG and JPEG files in the FER2013 layout
(``fer2013/<train|test>/<class>/<Usage>_<id>.<ext>``); single bits are flipped at seeded random
places and each damaged copy must either be refused with one line naming the file or give
exactly the original names, labels, splits and pixels.
"""

import hashlib
import io
import os
import tarfile
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from ferlab.cli import main
from ferlab.data import load_cifar10, load_fer2013
from ferlab.data.fer2013 import CLASS_NAMES
from ferlab.errors import DataError, FerlabError

FLIPS = 120  # seeded random single-bit flips per archive
ROWS = [  # (split folder, class folder, file name)
    ("train", "angry", "Training_1.png"),
    ("train", "happy", "Training_2.jpg"),
    ("train", "happy", "Training_3.png"),
    ("train", "sad", "Training_4.jpg"),
    ("test", "neutral", "PublicTest_5.png"),
    ("test", "surprise", "PrivateTest_6.jpg"),
    ("test", "fear", "PublicTest_7.jpg"),
    ("test", "disgust", "PrivateTest_8.png"),
]


def face_files() -> dict[str, bytes]:
    """Archive name -> encoded image: smooth faces-like gradients with noise, PNG or JPEG."""
    rng = np.random.default_rng(45)
    yy, xx = np.mgrid[0:48, 0:48]
    files = {}
    for i, (split, cls, name) in enumerate(ROWS):
        base = (xx * (i + 1) + yy * 3) % 256
        pixels = np.clip(base + rng.integers(-20, 20, (48, 48)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG" if name.endswith(".png") else "JPEG")
        files[f"fer2013/{split}/{cls}/{name}"] = buffer.getvalue()
    return files


def decoded(files: dict[str, bytes]) -> dict[str, np.ndarray]:
    return {name: np.asarray(Image.open(io.BytesIO(b)).convert("L")) for name, b in files.items()}


def write_tar(files, path, mode="w:gz"):
    with tarfile.open(path, mode) as archive:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(payload), 1_700_000_000, 0o644
            archive.addfile(info, io.BytesIO(payload))
    return path


def write_zip(files, path, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, payload in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2023, 11, 14, 22, 13, 20)), payload)
    return path


ARCHIVES = {
    "tar.gz": lambda files, folder: write_tar(files, folder / "fer2013-images.tar.gz"),
    "tar.bz2": lambda files, folder: write_tar(files, folder / "fer.tar.bz2", "w:bz2"),
    "tar.xz": lambda files, folder: write_tar(files, folder / "fer.tar.xz", "w:xz"),
    "zip": lambda files, folder: write_zip(files, folder / "fer2013.zip"),
    "zip-stored": lambda files, folder: write_zip(files, folder / "stored.zip", zipfile.ZIP_STORED),
}


def snapshot(data) -> tuple:
    order = np.argsort(data.names)
    return (
        data.names[order].tolist(),
        data.labels[order].tolist(),
        data.splits[order].tolist(),
        data.images[order],
    )


def assert_same(a, b):
    assert a[:3] == b[:3]
    np.testing.assert_array_equal(a[3], b[3])


def load_quietly(path, **kwargs):
    """Load, and fail on any warning: a skipped or damaged item is not a silent success."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_fer2013(path, **kwargs)


def assert_refused_naming(exc: BaseException, path) -> None:
    text = str(exc)
    assert "\n" not in text.strip(), text
    assert str(path) in text, text


@pytest.mark.parametrize("kind", list(ARCHIVES))
def test_intact_archive_loads_the_original_pixels(tmp_path, kind):
    files = face_files()
    path = ARCHIVES[kind](files, tmp_path)
    data = load_quietly(path, use_cache=False)
    expected = decoded(files)
    assert sorted(data.names.tolist()) == sorted(expected)
    for name, image, label in zip(data.names, data.images, data.labels, strict=True):
        np.testing.assert_array_equal(image, expected[name])
        assert CLASS_NAMES[label] == name.split("/")[2]
    assert sorted(data.splits.tolist()) == sorted(
        ["training"] * 4 + ["public_test"] * 2 + ["private_test"] * 2
    )
    # the cached load gives the same, twice (the second from the cache file)
    assert_same(snapshot(load_quietly(path)), snapshot(data))
    assert_same(snapshot(load_quietly(path)), snapshot(data))


@pytest.mark.parametrize("kind", list(ARCHIVES))
def test_single_bit_flips_are_refused_or_read_exactly(tmp_path, kind):
    files = face_files()
    path = ARCHIVES[kind](files, tmp_path)
    intact = path.read_bytes()
    reference = snapshot(load_quietly(path, use_cache=False))
    rng = np.random.default_rng(sum(map(ord, kind)))
    positions = rng.choice(len(intact) * 8, size=FLIPS, replace=False)
    outcomes = {"refused": 0, "exact": 0}
    for bit in positions.tolist():
        damaged = bytearray(intact)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        try:
            data = load_quietly(path, use_cache=False)
        except FerlabError as exc:
            assert_refused_naming(exc, path)
            outcomes["refused"] += 1
            continue
        assert_same(snapshot(data), reference)  # byte bit // 8 was harmless
        outcomes["exact"] += 1
    assert outcomes["refused"] > FLIPS // 2, outcomes


def test_the_issue_case_a_flip_past_the_tar_end_marker_is_refused(tmp_path):
    """The compressed tail after the tar's end marker (and the gzip CRC) is read too."""
    path = write_tar(face_files(), tmp_path / "fer2013-images.tar.gz")
    intact = path.read_bytes()
    for offset in (len(intact) - 8, len(intact) - 3, len(intact) - 20):  # CRC, length, deflate
        damaged = bytearray(intact)
        damaged[offset] ^= 0x10
        path.write_bytes(bytes(damaged))
        with pytest.raises(DataError, match="corrupt or truncated archive") as caught:
            load_fer2013(path, use_cache=False)
        assert_refused_naming(caught.value, path)


def test_plain_tar_with_a_damaged_header_or_truncated_is_refused(tmp_path):
    """An uncompressed tar has no checksum of its contents, but every header has one: a damaged
    header in the middle no longer ends the archive quietly there."""
    files = face_files()
    path = write_tar(files, tmp_path / "fer2013.tar", "w")
    intact = path.read_bytes()
    with tarfile.open(path) as archive:
        headers = [member.offset for member in archive.getmembers()]
        last = archive.getmembers()[-1]
        end = last.offset_data + -(-last.size // 512) * 512
    assert len(headers) == len(files)
    for header in headers[1:]:
        for byte in (0, 100, 124, 148, 156):  # name, mode, size, checksum, type
            damaged = bytearray(intact)
            damaged[header + byte] ^= 0x04
            path.write_bytes(bytes(damaged))
            with pytest.raises(DataError, match="damaged tar header") as caught:
                load_fer2013(path, use_cache=False)
            assert_refused_naming(caught.value, path)
    for cut in (headers[3], headers[3] + 512, end):  # at a header, in the data, no end marker
        path.write_bytes(intact[:cut])
        with pytest.raises(DataError) as caught:
            load_fer2013(path, use_cache=False)
        assert_refused_naming(caught.value, path)


def test_zip_with_a_damaged_central_directory_name_is_refused(tmp_path):
    files = face_files()
    path = write_zip(files, tmp_path / "fer2013.zip")
    intact = path.read_bytes()
    name = b"fer2013/train/happy/Training_3.png"
    directory = intact.rindex(name)  # the central directory's copy, after the local header's
    for change in (b"fer2013/train/happz/Training_3.png", b"fer2013/tRain/happy/Training_3.png"):
        damaged = intact[:directory] + change + intact[directory + len(name) :]
        path.write_bytes(damaged)
        with pytest.raises(DataError) as caught:
            load_fer2013(path, use_cache=False)
        assert_refused_naming(caught.value, path)


def test_truncated_archives_are_refused(tmp_path):
    files = face_files()
    for kind in ("tar.gz", "zip"):
        path = ARCHIVES[kind](files, tmp_path)
        intact = path.read_bytes()
        for keep in (len(intact) // 3, len(intact) - 1):
            path.write_bytes(intact[:keep])
            with pytest.raises(DataError) as caught:
                load_fer2013(path, use_cache=False)
            assert_refused_naming(caught.value, path)


def test_cli_prints_a_damaged_archive_in_one_line(tmp_path, capsys):
    from ferlab.nn import FullyConnectedNet

    path = write_tar(face_files(), tmp_path / "fer2013-images.tar.gz")
    damaged = bytearray(path.read_bytes())
    damaged[-6] ^= 0x01  # the gzip trailer: the tar itself reads fine
    path.write_bytes(bytes(damaged))
    model = FullyConnectedNet(2304, [4], 7, seed=0)
    model.class_names, model.input_shape = list(CLASS_NAMES), (48, 48)
    model.training_info = {"data": {"dataset": "fer2013"}, "seed": 0}
    model.save(tmp_path / "model.npz")
    code = main(["evaluate", "--model", str(tmp_path / "model.npz"), "--split", "public",
                 "--data", str(path), "--out", str(tmp_path / "eval")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert str(path) in err[0] and "corrupt or truncated archive" in err[0]


# --- the cache built from an archive ----------------------------------------------------------


def cache_files():
    return sorted(p for p in os.scandir(os.environ["FERLAB_CACHE_DIR"]) if p.name.endswith(".npz"))


def test_damaged_cache_file_is_detected_and_rebuilt(tmp_path, monkeypatch):
    import ferlab.data.images as images

    path = write_tar(face_files(), tmp_path / "fer2013-images.tar.gz")
    reference = snapshot(load_quietly(path))
    (entry,) = cache_files()
    with open(entry.path, "rb") as handle:
        intact = handle.read()
    reads = []
    real = images.iter_files
    monkeypatch.setattr(images, "iter_files", lambda *a, **k: reads.append(1) or real(*a, **k))
    load_quietly(path)
    assert reads == []  # an intact cache file is used
    rng = np.random.default_rng(7)
    detected = 0
    for bit in rng.choice(len(intact) * 8, size=60, replace=False).tolist():
        damaged = bytearray(intact)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with open(entry.path, "wb") as handle:
            handle.write(damaged)
        reads.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = load_fer2013(path)
        assert_same(snapshot(data), reference)  # never the damaged arrays
        messages = [str(w.message) for w in caught]
        if reads:  # rebuilt from the archive, and said so in one line naming the cache file
            assert len(messages) == 1 and "damaged data cache" in messages[0], messages
            assert entry.path in messages[0] and "\n" not in messages[0]
            detected += 1
        else:  # a harmless bit (a zip timestamp, say): the cache file still reads exactly
            assert messages == []
        with open(entry.path, "rb") as handle:  # the rebuilt file is whole again
            assert handle.read() == intact or not reads
    assert detected > 40


def test_cache_file_with_consistent_but_changed_arrays_is_detected(tmp_path):
    """Changed arrays that still form a valid npz (a zip CRC of their own) fail the digest."""
    from ferlab.common.arrays import read_npz, write_npz

    path = write_tar(face_files(), tmp_path / "fer2013-images.tar.gz")
    reference = snapshot(load_quietly(path))
    (entry,) = cache_files()
    meta, arrays = read_npz(entry.path)
    arrays["images"][0, 0, 0] ^= 1
    write_npz(entry.path, meta, arrays)
    with pytest.warns(UserWarning, match="damaged data cache .*do not match their SHA-256"):
        data = load_fer2013(path)
    assert_same(snapshot(data), reference)


# --- SHA256SUMS beside a data set ---------------------------------------------------------------


def write_sums(folder, path, digest=None, bsd=False):
    digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
    line = f"SHA256 ({path.name}) = {digest}" if bsd else f"{digest}  {path.name}"
    (folder / "SHA256SUMS").write_text(f"{'0' * 64}  other-file.tar.gz\n{line}\n")


def test_sha256sums_mismatch_is_refused_naming_the_file(tmp_path):
    path = write_tar(face_files(), tmp_path / "fer2013-images.tar.gz")
    write_sums(tmp_path, path, digest="ab" * 32)
    for use_cache in (False, True):
        with pytest.raises(DataError, match="does not match .* listed in") as caught:
            load_fer2013(path, use_cache=use_cache)
        assert_refused_naming(caught.value, path)
    assert cache_files() == []  # nothing cached from an unverified archive


def test_sha256sums_catches_damage_the_container_cannot(tmp_path):
    """A plain tar holds no checksum of its images; SHA256SUMS does."""
    path = write_tar(face_files(), tmp_path / "fer2013.tar", "w")
    write_sums(tmp_path, path)
    load_quietly(path, use_cache=False)
    with tarfile.open(path) as archive:
        data_at = archive.getmembers()[1].offset_data
    damaged = bytearray(path.read_bytes())
    damaged[data_at + 300] ^= 0x01  # inside a JPEG's scan data
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match="SHA-256") as caught:
        load_fer2013(path)
    assert_refused_naming(caught.value, path)


def test_sha256sums_is_verified_once_and_recorded_in_the_cache(tmp_path, monkeypatch):
    import ferlab.data.integrity as integrity

    path = write_tar(face_files(), tmp_path / "fer2013-images.tar.gz")
    write_sums(tmp_path, path, bsd=True)
    hashed = []
    real = integrity.file_sha256
    monkeypatch.setattr(integrity, "file_sha256", lambda p: hashed.append(p) or real(p))
    first = snapshot(load_quietly(path))
    assert hashed == [path]
    from ferlab.common.arrays import read_npz

    (entry,) = cache_files()
    meta, _ = read_npz(entry.path)
    assert meta["verified"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_same(snapshot(load_quietly(path)), first)
    assert hashed == [path]  # the cached load does not hash the archive again
    write_sums(tmp_path, path, digest="cd" * 32)  # the published checksum changes
    with pytest.raises(DataError, match="does not match"):
        load_fer2013(path)
    assert len(hashed) == 2


def test_sha256sums_for_a_csv_and_cifar_pickle_batches(tmp_path):
    import pickle

    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n3," + " ".join(["9"] * 2304) + ",Training\n")
    write_sums(tmp_path, csv)
    assert len(load_quietly(csv)) == 1
    write_sums(tmp_path, csv, digest="ef" * 32)
    with pytest.raises(DataError, match="fer2013.csv: SHA-256"):
        load_fer2013(csv)

    cifar = tmp_path / "cifar"
    cifar.mkdir()
    batches = {}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        data = np.zeros((2, 3072), np.uint8)
        batches[f"cifar-10-batches-py/{name}"] = pickle.dumps({b"data": data, b"labels": [1, 2]})
    archive = write_tar(batches, cifar / "cifar-10-python.tar.gz")
    write_sums(cifar, archive)
    assert len(load_cifar10(archive)) == 12
    write_sums(cifar, archive, digest="01" * 32)
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: SHA-256"):
        load_cifar10(archive)
