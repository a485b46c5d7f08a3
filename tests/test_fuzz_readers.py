"""Byte mutations of real files never give a traceback, a crash or a silent change (issue 45).

The properties are those of ``benchmarks/fuzz_readers.py`` (its module docstring says how each
outcome is judged), over a few Hypothesis-generated mutations of every target, derandomized so
that CI runs the same inputs each time; the harness runs the same for minutes. Below them, one
test per bug that the fuzzing found, each built from a real file damaged the way the fuzzer did.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferlab.common.arrays import read_npz, write_npz
from ferlab.data import load_cifar10, load_fer2013
from ferlab.errors import DataError, ModelFileError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fuzz_readers as fz  # noqa: E402

EXAMPLES = 12  # per target: about 230 inputs, a few seconds in all

TARGETS, _ = fz.build_targets()
REAL_FACES = fz.real_faces()[0]
REAL_CIFAR = fz.real_cifar()[0]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    return fz.Runner(TARGETS, tmp_path_factory.mktemp("fuzz"))


mutations = st.lists(
    st.builds(
        fz.Mutation,
        op=st.sampled_from(fz.MUTATIONS),
        zone=st.sampled_from(("head", "tail", "any")),
        where=st.floats(0, 1, exclude_max=True),
        value=st.integers(0, 0xFFFF),
        length=st.sampled_from((1, 2, 4, 8, 16, 64, 512, 3000)),
    ),
    min_size=1,
    max_size=4,
)


@pytest.mark.parametrize("name", list(TARGETS))
def test_mutated_real_files_are_refused_in_one_line_or_read_right(runner, name):
    seeds = runner.seeds(TARGETS[name])

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(index=st.integers(0, len(seeds) - 1), edits=mutations)
    def check(index, edits):
        data = fz.apply(seeds[index], edits)
        if data == seeds[index]:
            return
        outcome = runner.run(name, data)
        assert outcome.ok, f"{outcome.finding} {outcome.where}: {outcome.detail}"

    check()


# ----------------------------------------------------------------- the bugs the fuzzer found


def face_zip(tmp_path, name="fer2013.zip", extra=None) -> tuple[Path, dict[str, bytes]]:
    faces = REAL_FACES
    if extra:
        faces = {**extra, **faces}
    path = tmp_path / name
    path.write_bytes(fz.zip_bytes(faces, zipfile.ZIP_STORED))
    return path, faces


def central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory's file headers."""
    start = struct.unpack("<I", data[-6:-2])[0]  # no archive comment
    offsets, pos = [], start
    while data[pos : pos + 4] == b"PK\x01\x02":
        offsets.append(pos)
        name, extra, comment = struct.unpack("<3H", data[pos + 28 : pos + 34])
        pos += 46 + name + extra + comment
    return offsets


def test_zip_directory_entry_that_swallows_the_next_is_refused(tmp_path):
    # A damaged comment length makes one directory entry take the next one for its comment;
    # zipfile then lists one member fewer, without an error (fuzzing: 12 of 14 faces read).
    path, faces = face_zip(tmp_path)
    data = bytearray(path.read_bytes())
    first, second, third = central_entries(bytes(data))[:3]
    data[first + 32 : first + 34] = struct.pack("<H", third - second)
    path.write_bytes(bytes(data))
    assert len(zipfile.ZipFile(path).infolist()) == len(faces) - 1
    with pytest.raises(DataError, match="declares .* entries") as caught:
        load_fer2013(path, use_cache=False)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_zip_member_with_a_damaged_declared_size_is_refused_not_skipped(tmp_path):
    # The directory's uncompressed size of one stored member, set to 4 GB: it used to be
    # skipped as "more than the 67,108,864 accepted" and the rest read (a partial read).
    path, _ = face_zip(tmp_path)
    data = bytearray(path.read_bytes())
    entry = central_entries(bytes(data))[0]
    data[entry + 24 : entry + 28] = struct.pack("<I", 0xFFFF0133)
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="declares 4,294,902,067 bytes") as caught:
            load_fer2013(path, use_cache=False)
    assert str(path) in str(caught.value)


def test_zip_member_read_shorter_than_its_directory_says_is_refused(tmp_path):
    path, _ = face_zip(tmp_path)
    data = bytearray(path.read_bytes())
    entry = central_entries(bytes(data))[0]
    (size,) = struct.unpack("<I", data[entry + 24 : entry + 28])
    data[entry + 24 : entry + 28] = struct.pack("<I", size + 100)  # still under the limit
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="its directory entry says"):
        load_fer2013(path, use_cache=False)


def test_zip_entry_without_a_name_is_refused(tmp_path):
    # zipfile's ZipInfo.is_dir() raised IndexError on it: a traceback.
    path, _ = face_zip(tmp_path, extra={"": b"x"})
    with pytest.raises(DataError, match="an entry without a name") as caught:
        load_fer2013(path, use_cache=False)
    assert str(path) in str(caught.value)


def saved_npz(tmp_path) -> Path:
    arrays = {"images": np.arange(8 * 48 * 48, dtype=np.uint8).reshape(8, 48, 48)}  # > 4 KiB
    return write_npz(tmp_path / "cache.npz", {"format": "ferlab-data-cache"}, arrays)


def test_npz_with_a_damaged_compression_method_is_a_model_file_error(tmp_path):
    path = saved_npz(tmp_path)
    data = bytearray(path.read_bytes())
    for offset in central_entries(bytes(data)):
        data[offset + 10 : offset + 12] = struct.pack("<H", 99)  # no such method
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt or truncated"):  # NotImplementedError
        read_npz(path)


def test_npz_with_a_damaged_npy_header_is_a_model_file_error(tmp_path):
    path = saved_npz(tmp_path)
    data = path.read_bytes()
    at = data.rindex(b"), }")  # the images' header, read before its CRC-32 is reached
    path.write_bytes(data[:at] + b"), (" + data[at + 4 :])  # NumPy: tokenize.TokenError
    with pytest.raises(ModelFileError, match="EOF in multi-line"):
        read_npz(path)


def test_damaged_data_cache_is_rebuilt_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("FERLAB_CACHE_DIR", str(tmp_path / "cache"))
    faces = REAL_FACES
    source = tmp_path / "fer2013.tar"
    source.write_bytes(fz.tar_bytes(faces))
    reference = fz.snapshot(load_fer2013(source))
    (cache_file,) = (tmp_path / "cache").glob("*.npz")
    data = bytearray(cache_file.read_bytes())
    for offset in central_entries(bytes(data)):
        data[offset + 10 : offset + 12] = struct.pack("<H", 99)
    cache_file.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="damaged data cache"):
        again = load_fer2013(source)
    assert fz.same(fz.snapshot(again), reference)


def cifar_batches(tmp_path, damage) -> Path:
    cifar = REAL_CIFAR
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, payload in fz.cifar_batches(cifar).items():
        base = name.split("/")[1]
        (folder / base).write_bytes(damage(payload) if base == "test_batch" else payload)
    return folder


def test_intact_cifar_batches_load_through_the_safe_unpickler(tmp_path):
    folder = cifar_batches(tmp_path, lambda payload: payload)
    data = load_cifar10(folder)
    cifar = REAL_CIFAR
    assert data.images.shape == (len(cifar), 32, 32, 3) and data.images.dtype == np.uint8
    assert sorted(data.labels.tolist()) == sorted(list(range(10)) * 2)


def test_cifar_batch_with_a_damaged_dtype_state_is_refused_or_read_not_a_crash(tmp_path):
    # Two entries deleted from the pickled dtype's state: NumPy's dtype.__setstate__ took it
    # and the interpreter died with a segmentation fault. Now only the byte order is taken from
    # that state, so the batch reads as it was. Run apart, so that a crash fails one test.
    def damage(payload: bytes) -> bytes:
        unframed = pickle.dumps(pickle.loads(payload), protocol=3)  # no frame lengths to fix
        state = b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"  # (3, '|', None, None, None, -1, -1, 0)
        assert unframed.count(state) == 1
        return unframed.replace(state, state[2:], 1)

    intact = load_cifar10(cifar_batches(tmp_path / "intact", lambda payload: payload))
    folder = cifar_batches(tmp_path, damage)
    code = (
        "import hashlib\nfrom ferlab.data import load_cifar10\nfrom ferlab.errors import DataError\n"
        f"try:\n    data = load_cifar10({str(folder)!r})\n"
        "except DataError as exc:\n    print('refused', exc)\n"
        "else:\n    print('read', hashlib.sha256(data.images.tobytes()).hexdigest())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    digest = hashlib.sha256(intact.images.tobytes()).hexdigest()
    assert done.stdout.strip() == f"read {digest}" or done.stdout.startswith("refused ")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (pickle.dumps(np.zeros(3, np.uint8), protocol=4), "not a dict"),  # IndexError before
        (b"\x80\x04Q.", "persistent id"),  # a two-line message before
        (pickle.dumps({b"data": [300], b"labels": [1]}, protocol=4), "corrupt"),  # OverflowError
        (
            pickle.dumps({b"data": np.zeros(3, np.dtype("O")), b"labels": []}, protocol=4),
            "corrupt",
        ),
    ],
)
def test_damaged_cifar_batch_is_one_line_naming_it(tmp_path, payload, message):
    folder = cifar_batches(tmp_path, lambda _: payload)
    with pytest.raises(DataError, match=message) as caught:
        load_cifar10(folder)
    text = str(caught.value)
    assert "\n" not in text and f"{folder}/test_batch" in text


def test_zip_reader_still_reads_an_intact_zip_exactly(tmp_path):
    path, faces = face_zip(tmp_path)
    data = load_fer2013(path, use_cache=False)
    expected = {n: np.asarray(fz.Image.open(io.BytesIO(b)).convert("L")) for n, b in faces.items()}
    assert sorted(data.names.tolist()) == sorted(expected)
    for name, image in zip(data.names, data.images, strict=True):
        np.testing.assert_array_equal(image, expected[name])
