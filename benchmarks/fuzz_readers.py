"""Fuzzing the data readers and the image loader with byte mutations of real files (issue 45).

Seed files are built on the fly from real pictures: PNG, JPEG, GIF, WebP, TIFF and BMP encodings
of scikit-image's ``astronaut`` and ``coffee`` photos (RGB, RGBA, palette, grayscale, 16-bit,
CMYK, EXIF-rotated, progressive, several TIFF compressions); FER2013-layout archives (tar.gz,
tar.bz2, plain tar, zip deflated and stored) and ``fer2013.csv[.gz]`` of real FER2013 faces; a
CIFAR-10 archive of real CIFAR images as class folders (zip) and as the original python pickle
batches (tar.gz, and a plain folder whose batches are mutated); the data cache file; a data set
with a ``SHA256SUMS`` beside it. The real faces and CIFAR images come from
``/work/shared/data`` when it is there, else from crops of the two photos.

Each input is a seed with 1 to 4 stacked mutations (bit flips, interesting bytes and integers,
insertions, deletions, duplicated or copied ranges, truncation, appended garbage), placed near
the start, near the end or anywhere; PNG mutants have their chunk CRCs recomputed half the time
so that the decoder, not the CRC check, sees them. A mutant that reaches Python lines of
ferlab, Pillow, tarfile, zipfile, gzip, csv, pickle or NumPy's npy reader that no earlier input
of its target reached joins the target's corpus and is mutated further (line coverage from
``sys.settrace``; ``--no-coverage`` turns it off).

Every input runs in a worker process with a per-input time limit (a hang) and an address-space
limit; its outcome must be one of

- ``refused``: a :class:`~ferlab.errors.FerlabError` (a ``ValueError`` for the internal
  ``decode_image``) on one line naming the file (``image data`` for bytes);
- ``read``: a successful read, checked by the target's rule:
  * a container with a checksum (tar.gz/tar.bz2 with their CRC, zip with its CRC-32s,
    ``fer2013.csv.gz``, a data set with ``SHA256SUMS``, the cache's own SHA-256) must give
    exactly the intact seed's names, labels, splits and pixels, with no warning; anything else is
    a ``silent change`` (or ``partial read`` when a warning said something was skipped). For
    ``SHA256SUMS`` a changed archive must be refused whatever the reader would make of it; a
    damaged cache file must be rebuilt (a warning) and give the original;
  * a plain tar has no checksum over its members' bytes, so the mutant is compared with the
    seed byte by byte: when it has the seed's length and every changed byte lies inside members'
    data (their 512-byte headers, padding and end marker untouched), the members whose bytes
    changed may decode to other pixels or be skipped with a warning, every other member must be
    exact; any other change (headers, padding, the end marker, a changed length) must be
    refused or read exactly. Tar padding and the blocks after the end marker are bytes that
    provably do not matter: a mutant that only changes them is read exactly, which is allowed;
  * a plain CSV or pickle batch has no checksum at all: any well-formed result is allowed
    (uint8 images of the right shape, labels in range), but rows may not vanish without a
    warning;
  * an image: an 8-bit RGB array (``read_photo``) or 8-bit gray array (``decode_image``) of at
    most the pixel limit;
- anything else is a finding: ``traceback`` (any other exception), ``hang`` (past the time
  limit), ``crash`` (the worker died), ``silent change``/``partial read``, ``multi-line`` or
  ``unnamed`` refusals. Each finding's input is saved under ``/tmp/ferlab-fuzz-findings``.

    .venv/bin/python benchmarks/fuzz_readers.py --seconds 20 --seed 45
    # one target, longer:  --targets fer-tar.gz --seconds 120
    # writes benchmarks/results/fuzz_readers.json (executions, time and findings per target)

``tests/test_fuzz_readers.py`` runs the same properties over a few Hypothesis-generated
mutations of every target in a few seconds.
"""

from __future__ import annotations

import argparse
import bz2
import collections
import contextlib
import dataclasses
import gzip
import hashlib
import io
import multiprocessing
import os
import pickle
import platform
import random
import shutil
import struct
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from harness import RESULTS as RECORDS
from harness import command_line, write_record

SHARED = Path("/work/shared/data")
SCRATCH = Path(tempfile.gettempdir()) / "ferlab-fuzz"
FINDINGS = Path(tempfile.gettempdir()) / "ferlab-fuzz-findings"
RESULTS = RECORDS / "fuzz_readers.json"
FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
TIME_LIMIT_S = 10.0  # per input: longer is a hang
MEMORY_LIMIT = 3 << 30  # address space of the worker
PHOTO_SIDE = 96  # photos are scaled down so that an execution takes milliseconds
TRACED = ("ferlab", "PIL", "tarfile", "zipfile", "gzip", "csv", "pickle", "numpy/lib", "bz2")


# --------------------------------------------------------------------------- real seed files


def _photos() -> dict[str, np.ndarray]:
    from skimage import data

    astronaut = data.astronaut()
    coffee = data.coffee()
    small = lambda a: np.asarray(Image.fromarray(a).resize((PHOTO_SIDE, PHOTO_SIDE)))  # noqa: E731
    return {
        "astronaut": small(astronaut),
        "coffee": small(coffee),
        "face": astronaut[20:200, 150:330],
    }


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo_seeds() -> dict[str, list[bytes]]:
    """Format -> encoded real photos in the modes and variants readers meet."""
    p = _photos()
    rgb = Image.fromarray(p["astronaut"])
    coffee = Image.fromarray(p["coffee"])
    gray = rgb.convert("L")
    rgba = coffee.convert("RGBA")
    rgba.putalpha(
        Image.fromarray(np.tile(np.arange(PHOTO_SIDE, dtype=np.uint8) * 2, (PHOTO_SIDE, 1)))
    )
    gray16 = Image.fromarray((np.asarray(gray, dtype=np.uint16) * 257).astype(np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    palette = coffee.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    return {
        "png": [
            _encode(rgb, "PNG"),
            _encode(rgba, "PNG"),
            _encode(gray16, "PNG"),
            _encode(palette, "PNG", transparency=0),
        ],
        "jpeg": [
            _encode(rgb, "JPEG", quality=85, exif=exif.tobytes()),
            _encode(coffee, "JPEG", quality=70, progressive=True),
            _encode(coffee.convert("CMYK"), "JPEG"),
            _encode(gray, "JPEG"),
        ],
        "gif": [
            _encode(palette, "GIF"),
            _encode(rgb, "GIF", save_all=True, append_images=[coffee]),
        ],
        "webp": [_encode(rgb, "WEBP", quality=80), _encode(rgba, "WEBP", lossless=True)],
        "tiff": [
            _encode(rgb, "TIFF"),
            _encode(coffee, "TIFF", compression="tiff_lzw"),
            _encode(rgba, "TIFF", compression="tiff_adobe_deflate"),
            _encode(gray16, "TIFF", compression="packbits"),
            _encode(gray, "TIFF", compression="jpeg"),
        ],
        "bmp": [_encode(rgb, "BMP"), _encode(palette, "BMP")],
    }


def _first_per_folder(source: Path, per: int, splits: tuple[str, ...]) -> dict[str, bytes]:
    chosen: dict[str, bytes] = {}
    counts: collections.Counter = collections.Counter()
    with tarfile.open(source, "r|gz") as archive:
        for member in archive:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or parts[1] not in splits:
                continue
            if counts[parts[1], parts[2]] >= per:
                continue
            counts[parts[1], parts[2]] += 1
            chosen[member.name] = archive.extractfile(member).read()
            if len(counts) == 7 * len(splits) and min(counts.values()) >= per:
                break
    return dict(sorted(chosen.items()))


def real_faces() -> tuple[dict[str, bytes], str]:
    """FER2013-layout name -> JPEG (a few PNG) of real faces, and where they came from."""
    source = SHARED / "fer2013-images.tar.gz"
    if source.is_file():
        files = _first_per_folder(source, 1, ("test", "train"))
        origin = str(source)
    else:  # crops of the astronaut's face, one per class and split
        face = Image.fromarray(_photos()["face"]).convert("L")
        files, origin = {}, "skimage astronaut crops"
        for i, cls in enumerate(FER_CLASSES):
            for split, usage in (("test", "PublicTest"), ("train", "Training")):
                crop = face.crop((i * 6, i * 4, 120 + i * 6, 120 + i * 4)).resize((48, 48))
                files[f"fer2013/{split}/{cls}/{usage}_{i}.jpg"] = _encode(crop, "JPEG")
    for name in list(files)[::5]:  # a few members as PNG, to read both decoders
        image = Image.open(io.BytesIO(files.pop(name)))
        files[name.rsplit(".", 1)[0] + ".png"] = _encode(image, "PNG")
    return dict(sorted(files.items())), origin


def real_cifar() -> tuple[dict[str, bytes], str]:
    """CIFAR class-folder name -> JPEG of real CIFAR-10 images (one per class and split)."""
    source = SHARED / "cifar-10-images.tar.gz"
    if source.is_file():
        files: dict[str, bytes] = {}
        counts: collections.Counter = collections.Counter()
        with tarfile.open(source, "r|gz") as archive:
            for member in archive:
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 4 and not counts[parts[1], parts[2]]:
                    counts[parts[1], parts[2]] += 1
                    files[member.name] = archive.extractfile(member).read()
                if len(counts) == 20:
                    break
        return dict(sorted(files.items())), str(source)
    photo = Image.fromarray(_photos()["astronaut"])
    files = {}
    for i, cls in enumerate(CIFAR_CLASSES):
        for split in ("test", "train"):
            crop = photo.crop((i * 5, i * 3, 32 + i * 5, 32 + i * 3))
            files[f"cifar-10-images/{split}/{cls}/{i:04d}.png"] = _encode(crop, "PNG")
    return files, "skimage astronaut crops"


def tar_bytes(files: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(payload), 1_700_000_000, 0o644
            archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, payload in files.items():
            info = zipfile.ZipInfo(name, (2023, 11, 14, 22, 13, 20))
            info.compress_type = compression  # writestr takes a ZipInfo's own, STORED by default
            archive.writestr(info, payload)
    return buffer.getvalue()


def fer_csv(files: dict[str, bytes]) -> bytes:
    usage = {"Training": "Training", "PublicTest": "PublicTest", "PrivateTest": "PrivateTest"}
    lines = ["emotion,pixels,Usage"]
    for name, payload in files.items():
        _, _, cls, base = name.split("/")
        pixels = np.asarray(Image.open(io.BytesIO(payload)).convert("L")).ravel()
        lines.append(
            f"{FER_CLASSES.index(cls)},{' '.join(map(str, pixels))},{usage[base.split('_')[0]]}"
        )
    return ("\n".join(lines) + "\n").encode()


def cifar_batches(files: dict[str, bytes]) -> dict[str, bytes]:
    """The original python pickle batches (protocol 2 dicts), two images per train batch."""
    rows = {"train": [], "test": []}
    for name, payload in files.items():
        _, split, cls, base = name.split("/")
        pixels = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))
        rows[split].append((pixels.transpose(2, 0, 1).ravel(), CIFAR_CLASSES.index(cls), base))

    def batch(label: str, items) -> bytes:
        return pickle.dumps(
            {
                b"batch_label": label.encode(),
                b"labels": [label_ for _, label_, _ in items],
                b"data": np.stack([pixels for pixels, _, _ in items]).astype(np.uint8),
                b"filenames": [base.encode() for _, _, base in items],
            },
            protocol=4,  # Python 3's default; Python 3 pickles bytes at protocol 2 via _codecs
        )

    out = {}
    train = rows["train"]
    for i in range(5):
        out[f"cifar-10-batches-py/data_batch_{i + 1}"] = batch(
            f"training batch {i + 1} of 5", train[2 * i : 2 * i + 2]
        )
    out["cifar-10-batches-py/test_batch"] = batch("testing batch 1 of 1", rows["test"])
    return out


# --------------------------------------------------------------------------------- mutations

MUTATIONS = (
    "flip", "byte", "int16", "int32", "insert", "duplicate", "delete", "copy", "truncate", "append",
)  # fmt: skip
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x30, 0x0A)
INTERESTING_INTS = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One edit: ``op`` at ``where`` (a fraction of the file, or of its first/last 1 KiB when
    ``zone`` is ``head``/``tail``), with a ``value`` and ``length`` whose meaning depends on op."""

    op: str
    zone: str
    where: float
    value: int
    length: int


def _position(data: bytes | bytearray, m: Mutation) -> int:
    n = max(len(data), 1)
    if m.zone == "head":
        return int(m.where * min(n, 1024))
    if m.zone == "tail":
        span = min(n, 1024)
        return n - span + int(m.where * span)
    return int(m.where * n)


def apply(data: bytes, mutations: list[Mutation]) -> bytes:
    """The seed ``data`` with every mutation applied in order (pure, deterministic)."""
    out = bytearray(data)
    for m in mutations:
        if not out and m.op not in ("insert", "append"):
            continue
        pos = min(_position(out, m), max(len(out) - 1, 0))
        length = max(1, m.length)
        if m.op == "flip":
            out[pos] ^= 1 << (m.value % 8)
        elif m.op == "byte":
            value = (
                INTERESTING_BYTES[m.value % len(INTERESTING_BYTES)]
                if m.value < 64
                else m.value % 256
            )
            out[pos] = value if value != out[pos] else value ^ 0xFF
        elif m.op in ("int16", "int32"):
            size = 2 if m.op == "int16" else 4
            value = INTERESTING_INTS[m.value % len(INTERESTING_INTS)] % (1 << (8 * size))
            order = "<" if m.value % 2 else ">"
            out[pos : pos + size] = struct.pack(order + ("H" if size == 2 else "I"), value)
        elif m.op == "insert":
            rng = random.Random(m.value)
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(min(length, 256)))
        elif m.op == "duplicate":
            chunk = bytes(out[pos : pos + min(length, 4096)])
            out[pos:pos] = chunk
        elif m.op == "delete":
            del out[pos : pos + min(length, 4096)]
        elif m.op == "copy":
            source = m.value % len(out)
            chunk = bytes(out[source : source + min(length, 512)])
            out[pos : pos + len(chunk)] = chunk
        elif m.op == "truncate":
            del out[pos:]
        elif m.op == "append":
            rng = random.Random(m.value)
            out += bytes(rng.randrange(256) for _ in range(min(length, 256)))
    return bytes(out)


def random_mutations(rng: random.Random) -> list[Mutation]:
    count = rng.choice((1, 1, 1, 2, 2, 3, 4))
    out = []
    for _ in range(count):
        op = rng.choice(MUTATIONS)
        length = rng.choice((1, 2, 4, 8, 16, 64, 512, rng.randrange(1, 4096)))
        out.append(
            Mutation(
                op,
                rng.choice(("head", "tail", "any")),
                rng.random(),
                rng.randrange(1 << 16),
                length,
            )
        )
    return out


def fix_png_crcs(data: bytes) -> bytes:
    """A PNG whose chunk CRCs are recomputed, so that a mutated chunk reaches the decoder."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack(">I", out[pos : pos + 4])
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack(">I", zlib.crc32(out[pos + 4 : end]) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(out)


# ------------------------------------------------------------------------------------ targets


@dataclasses.dataclass
class Target:
    """A file to mutate, where it is written, how it is read and which rule its read obeys."""

    name: str
    seeds: list[bytes]
    filename: str  # relative to the target's work folder
    kind: str  # photo | container | plain_tar | plain | cache | sums
    context: dict = dataclasses.field(default_factory=dict)  # files written beside, once


def build_targets(only: set[str] | None = None) -> tuple[dict[str, Target], dict]:
    """Every fuzz target from real files, and where the faces and CIFAR images came from."""
    faces, faces_origin = real_faces()
    cifar, cifar_origin = real_cifar()
    targets: list[Target] = []
    for fmt, seeds in photo_seeds().items():
        targets.append(Target(f"photo-{fmt}", seeds, f"photo.{fmt}", "photo"))
    fer_tar = tar_bytes(faces)
    targets += [
        Target("fer-tar.gz", [gzip.compress(fer_tar, mtime=0)], "fer2013.tar.gz", "container"),
        Target("fer-tar.bz2", [bz2.compress(fer_tar)], "fer2013.tar.bz2", "container"),
        Target("fer-tar", [fer_tar], "fer2013.tar", "plain_tar"),
        Target("fer-zip", [zip_bytes(faces)], "fer2013.zip", "container"),
        Target("fer-zip-stored", [zip_bytes(faces, zipfile.ZIP_STORED)], "stored.zip", "container"),
        Target(
            "fer-csv.gz", [gzip.compress(fer_csv(faces), mtime=0)], "fer2013.csv.gz", "container"
        ),
        Target("fer-csv", [fer_csv(faces)], "fer2013.csv", "plain"),
        Target("cifar-zip", [zip_bytes(cifar)], "cifar-10-images.zip", "container"),
    ]
    batches = cifar_batches(cifar)
    batches_tgz = gzip.compress(tar_bytes(batches), mtime=0)
    targets.append(
        Target("cifar-batches.tar.gz", [batches_tgz], "cifar-10-python.tar.gz", "container")
    )
    inner = {name.split("/")[1]: payload for name, payload in batches.items()}
    targets.append(
        Target(
            "cifar-batch",
            [inner["test_batch"], inner["data_batch_1"]],
            "cifar-10-batches-py/test_batch",
            "plain",
            {f"cifar-10-batches-py/{n}": p for n, p in inner.items() if n != "test_batch"},
        )
    )
    archive = gzip.compress(fer_tar, mtime=0)
    sums = f"{hashlib.sha256(archive).hexdigest()}  fer2013.tar.gz\n".encode()
    targets.append(Target("sha256sums", [archive], "fer2013.tar.gz", "sums", {"SHA256SUMS": sums}))
    targets.append(
        Target("sha256sums-file", [sums], "SHA256SUMS", "sums_file", {"fer2013.tar.gz": archive})
    )
    targets.append(Target("cache", [], "cache", "cache", {"fer2013.tar.gz": archive}))
    chosen = {t.name: t for t in targets if only is None or t.name in only}
    return chosen, {"faces": faces_origin, "faces_count": len(faces), "cifar": cifar_origin}


# ------------------------------------------------------------------------------------ outcomes


@dataclasses.dataclass
class Outcome:
    status: str  # refused | read | finding
    finding: str = ""  # traceback | hang | crash | silent change | partial read | ...
    detail: str = ""
    where: str = ""  # file:line of the exception, to tell findings apart
    new_lines: int = 0

    @property
    def ok(self) -> bool:
        return self.status != "finding"


def snapshot(data) -> tuple:
    names = data.names if data.names is not None else np.arange(len(data))
    order = np.argsort(names, kind="stable")
    return (
        [str(n) for n in np.asarray(names)[order]],
        data.labels[order].tolist(),
        data.splits[order].tolist(),
        np.ascontiguousarray(data.images[order]),
    )


def same(a: tuple, b: tuple) -> bool:
    return a[:3] == b[:3] and a[3].shape == b[3].shape and np.array_equal(a[3], b[3])


def tar_members(data: bytes) -> list[tuple] | None:
    """(name, type, size, 512-byte header, data) of every member, as a lenient reader sees them."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            members = list(archive)
            return [
                (m.name, m.type, m.size, data[m.offset : m.offset + 512],
                 data[m.offset_data : m.offset_data + m.size])
                for m in members
            ]  # fmt: skip
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return None


class Runner:
    """Reads mutants of every target in one folder; checks each outcome against its rule."""

    def __init__(self, targets: dict[str, Target], work: Path, coverage: bool = False) -> None:
        self.targets = targets
        self.work = work
        self.references: dict[str, tuple] = {}
        self.coverage = coverage
        self.seen: dict[str, set] = collections.defaultdict(set)

    @contextlib.contextmanager
    def cache_dir(self):
        """The data cache in the work folder while a target is read, never the user's."""
        before = os.environ.get("FERLAB_CACHE_DIR")
        os.environ["FERLAB_CACHE_DIR"] = str(self.work / "cache-dir")
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("FERLAB_CACHE_DIR", None)
            else:
                os.environ["FERLAB_CACHE_DIR"] = before

    def folder(self, target: Target) -> Path:
        folder = self.work / target.name
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for rel, payload in target.context.items():
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(payload)
        return folder

    def source(self, target: Target) -> Path:
        folder = self.folder(target)
        if target.name == "cifar-batch":
            return folder / "cifar-10-batches-py"
        if target.kind in ("sums_file", "cache"):
            return folder / "fer2013.tar.gz"
        return folder / target.filename

    def load(self, target: Target, path: Path, use_cache: bool = False):
        from ferlab.data import load_cifar10, load_fer2013

        loader = load_cifar10 if target.name.startswith("cifar") else load_fer2013
        return loader(path, use_cache=use_cache)

    def reference(self, target: Target) -> tuple:
        if target.name not in self.references:
            path = self.source(target)
            if target.kind not in ("sums_file", "cache"):
                (self.folder(target) / target.filename).write_bytes(target.seeds[0])
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                self.references[target.name] = snapshot(self.load(target, path))
        return self.references[target.name]

    def cache_file(self, target: Target) -> Path:
        """The cache file of the intact source, built once (and rebuilt after each load)."""
        from ferlab.data.cache import cache_path

        folder = self.folder(target)
        return cache_path(
            "fer2013-class_folders", (folder / "fer2013.tar.gz").resolve(), {"strict": False}
        )

    def seeds(self, target: Target) -> list[bytes]:
        if target.kind == "cache" and not target.seeds:
            with self.cache_dir():
                self.reference(target)
                self.load(target, self.source(target), use_cache=True)
                target.seeds = [self.cache_file(target).read_bytes()]
        return target.seeds

    # -- one input

    def run(self, name: str, data: bytes) -> Outcome:
        with self.cache_dir():
            return self._run_traced(name, data)

    def _run_traced(self, name: str, data: bytes) -> Outcome:
        target = self.targets[name]
        reference = None if target.kind == "photo" else self.reference(target)
        self.seeds(target)
        lines: set = set()
        tracer = _line_tracer(lines) if self.coverage else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if tracer:
                sys.settrace(tracer)
            try:
                outcome = self._run(target, data, reference, caught)
            except Exception as exc:  # noqa: BLE001 - every other exception is a finding
                outcome = _traceback_finding(exc)
            finally:
                if tracer:
                    sys.settrace(None)
        if self.coverage:
            new = lines - self.seen[name]
            self.seen[name] |= new
            outcome.new_lines = len(new)
        return outcome

    def _run(self, target: Target, data: bytes, reference, caught) -> Outcome:
        from ferlab.errors import FerlabError

        if target.kind == "photo":
            return self._photo(target, data)
        folder = self.folder(target)
        if target.kind == "cache":
            path = self.cache_file(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            source = self.source(target)
        else:
            path = folder / target.filename
            path.write_bytes(data)
            source = self.source(target)
        try:
            result = self.load(target, source, use_cache=target.kind == "cache")
        except FerlabError as exc:
            return self._refused(exc, source, target)
        got = snapshot(result)
        warned = [str(w.message) for w in caught]
        exact = same(got, reference) and not warned
        if target.kind == "cache":
            return Outcome("read") if same(got, reference) else _silent(warned)
        if target.kind == "sums" and data != target.seeds[0]:
            return Outcome(
                "finding", "silent change", "a changed archive was read despite SHA256SUMS"
            )
        if target.kind in ("container", "sums", "sums_file"):
            return Outcome("read") if exact else _silent(warned)
        if target.kind == "plain_tar":
            return self._plain_tar(target, data, got, reference, warned)
        return self._plain(target, got, reference, warned)

    def _refused(self, exc: BaseException, source: Path, target: Target) -> Outcome:
        text = str(exc)
        if target.kind == "cache":
            return Outcome(
                "finding", "refused", f"a damaged cache was refused, not rebuilt: {text}"
            )
        if "\n" in text.strip():
            return Outcome("finding", "multi-line", text[:500])
        if str(source) not in text:
            return Outcome("finding", "unnamed", text[:500])
        return Outcome("refused", detail=text[:300])

    def _plain_tar(self, target, data, got, reference, warned) -> Outcome:
        if same(got, reference) and not warned:
            return Outcome("read")
        seed_members, members = tar_members(target.seeds[0]), tar_members(data)
        if members is None or [m[:4] for m in members] != [m[:4] for m in seed_members]:
            return _silent(warned)  # a header or the end marker changed: refused or exact
        # Only members' data changed (a plain tar has no checksum over it): those members may
        # decode to other pixels or be skipped with a warning; every other one is exact.
        touched = {m[0] for m, s in zip(members, seed_members, strict=True) if m[4] != s[4]}
        names, ref_names = got[0], reference[0]
        missing = set(ref_names) - set(names)
        if (missing - touched) or set(names) - set(ref_names) or (missing and not warned):
            return _silent(warned)
        for i, name in enumerate(names):
            j = ref_names.index(name)
            if name not in touched and not np.array_equal(got[3][i], reference[3][j]):
                return _silent(warned)
            if (got[1][i], got[2][i]) != (reference[1][j], reference[2][j]):
                return _silent(warned)
        return Outcome("read")

    def _plain(self, target, got, reference, warned) -> Outcome:
        names, labels, _, images = got
        side = (32, 32, 3) if target.name.startswith("cifar") else (48, 48)
        if images.dtype != np.uint8 or images.shape[1:] != side:
            return Outcome("finding", "malformed read", f"images {images.dtype} {images.shape}")
        top = 9 if target.name.startswith("cifar") else 6
        if labels and (min(labels) < 0 or max(labels) > top):
            return Outcome("finding", "malformed read", f"labels {min(labels)}..{max(labels)}")
        if target.name == "fer-csv" and len(names) < len(reference[0]) and not warned:
            return Outcome(
                "finding", "silent change", f"{len(names)} of {len(reference[0])} rows, no warning"
            )
        return Outcome("read")

    def _photo(self, target: Target, data: bytes) -> Outcome:
        from ferlab.data.images import MAX_PIXELS, decode_image
        from ferlab.errors import DataError
        from ferlab.vision.photo import read_photo

        statuses = []
        try:
            rgb = read_photo(data)
        except DataError as exc:
            text = str(exc)
            if "\n" in text.strip() or not text.startswith("image data: "):
                return Outcome("finding", "multi-line" if "\n" in text else "unnamed", text[:500])
            statuses.append(text)
        else:
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                return Outcome(
                    "finding", "malformed read", f"read_photo gave {rgb.dtype} {rgb.shape}"
                )
            if rgb.shape[0] * rgb.shape[1] > MAX_PIXELS:
                return Outcome("finding", "malformed read", f"{rgb.shape} over the pixel limit")
        try:
            gray, _ = decode_image(data, None, "L")
        except (ValueError, OSError) as exc:
            text = str(exc)
            if "\n" in text.strip():
                return Outcome("finding", "multi-line", text[:500])
            statuses.append(text)
        else:
            if gray.dtype != np.uint8 or gray.ndim != 2:
                return Outcome(
                    "finding", "malformed read", f"decode_image gave {gray.dtype} {gray.shape}"
                )
        return Outcome("refused" if statuses else "read", detail="; ".join(statuses)[:300])


def _silent(warned: list[str]) -> Outcome:
    if warned:
        return Outcome("finding", "partial read", "; ".join(warned)[:500])
    return Outcome("finding", "silent change", "read without error or warning, but different")


def _traceback_finding(exc: BaseException) -> Outcome:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    text = "".join(traceback.format_exception(exc))[-2000:]
    return Outcome(
        "finding", "traceback", f"{exc.__class__.__name__}: {exc}"[:300] + "\n" + text, where
    )


def _line_tracer(lines: set) -> Callable:
    def local(frame, event, arg):
        if event == "line":
            lines.add((frame.f_code.co_filename, frame.f_lineno))
        return local

    def tracer(frame, event, arg):
        filename = frame.f_code.co_filename
        if any(part in filename for part in TRACED):
            return local
        return None

    return tracer


# ------------------------------------------------------------------------------------- worker


def _worker(connection, only: list[str], work: str, coverage: bool) -> None:
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    with contextlib.suppress(OSError):  # libtiff and libjpeg complain on stderr: kept aside
        log = os.open(Path(work) / "worker-stderr.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(log, 2)
    targets, _ = build_targets(set(only))
    runner = Runner(targets, Path(work), coverage)
    connection.send({name: runner.seeds(t) for name, t in targets.items()})
    while True:
        message = connection.recv()
        if message is None:
            return
        name, data = message
        connection.send(dataclasses.asdict(runner.run(name, data)))


class Worker:
    """A worker process that reads inputs; killed and restarted after a hang or a crash."""

    def __init__(self, only: list[str], work: Path, coverage: bool) -> None:
        self.args = (only, str(work), coverage)
        self.start()

    def start(self) -> None:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.process.start()
        if not self.connection.poll(300):
            raise RuntimeError("the fuzz worker did not start")
        self.seeds = self.connection.recv()

    def run(self, name: str, data: bytes, limit: float) -> Outcome:
        try:
            self.connection.send((name, data))
            if self.connection.poll(limit):
                return Outcome(**self.connection.recv())
            finding = Outcome("finding", "hang", f"no result after {limit:.0f} s")
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(5)
            finding = Outcome("finding", "crash", f"worker died (exit {self.process.exitcode})")
        self.stop()
        self.start()
        return finding

    def stop(self) -> None:
        self.process.kill()
        self.process.join(5)


# ------------------------------------------------------------------------------------ fuzzing


def fuzz_target(
    worker: Worker, name: str, seconds: float, rng: random.Random, limit: float
) -> dict:
    seeds = worker.seeds[name]
    corpus: list[tuple[int, bytes]] = [(i, s) for i, s in enumerate(seeds)]
    outcomes: collections.Counter = collections.Counter()
    findings: dict[tuple, dict] = {}
    executions = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        seed_index, parent = (
            rng.choice(corpus) if rng.random() < 0.5 else corpus[rng.randrange(len(seeds))]
        )
        mutations = random_mutations(rng)
        data = apply(parent, mutations)
        if name == "photo-png" and rng.random() < 0.5:
            data = fix_png_crcs(data)
        if data == seeds[seed_index]:
            continue
        outcome = worker.run(name, data, limit)
        executions += 1
        outcomes[outcome.finding or outcome.status] += 1
        if outcome.new_lines and len(corpus) < 500:
            corpus.append((seed_index, data))
        if not outcome.ok:
            first = outcome.detail.split("\n")[0]
            key = (
                outcome.finding,
                outcome.where,
                first.split(":")[0] if outcome.where else first[:80],
            )
            entry = findings.setdefault(
                key, {"kind": outcome.finding, "where": outcome.where, "count": 0}
            )
            entry["count"] += 1
            if entry["count"] == 1:
                FINDINGS.mkdir(parents=True, exist_ok=True)
                saved = FINDINGS / f"{name}-{hashlib.sha256(data).hexdigest()[:12]}.bin"
                saved.write_bytes(data)
                entry.update(input=str(saved), detail=outcome.detail[-1500:])
                print(f"  {name}: {outcome.finding} {outcome.where} -> {saved}", flush=True)
    elapsed = time.perf_counter() - start
    return {
        "executions": executions,
        "seconds": round(elapsed, 1),
        "executions_per_s": round(executions / elapsed, 1),
        "outcomes": dict(outcomes),
        "corpus": len(corpus),
        "findings": sum(f["count"] for f in findings.values()),
        "unique_findings": list(findings.values()),
        "seed_bytes": [len(s) for s in seeds],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="fuzzing time per target")
    parser.add_argument("--seed", type=int, default=45)
    parser.add_argument("--targets", nargs="*", help="only these targets (default: all)")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, help="per input (s)")
    parser.add_argument("--no-coverage", action="store_true", help="no line-coverage feedback")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument(
        "--replay", nargs=2, metavar=("TARGET", "FILE"), help="read one saved input, in process"
    )
    args = parser.parse_args(argv)
    targets, origins = build_targets(set(args.targets) if args.targets else None)
    if args.list:
        print("\n".join(f"{t.name}: {t.kind}, {len(t.seeds)} seed(s)" for t in targets.values()))
        return 0
    if args.replay:
        name, file = args.replay
        work = Path(tempfile.mkdtemp(prefix="ferlab-fuzz-replay-"))
        outcome = Runner(build_targets({name})[0], work).run(name, Path(file).read_bytes())
        print(f"{outcome.status} {outcome.finding} {outcome.where}\n{outcome.detail}")
        shutil.rmtree(work, ignore_errors=True)
        return 0 if outcome.ok else 1
    if args.targets and set(args.targets) - set(targets):
        parser.error(f"unknown targets: {sorted(set(args.targets) - set(targets))}")
    work = SCRATCH / f"seed{args.seed}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.time()
    worker = Worker(list(targets), work, not args.no_coverage)
    rng = random.Random(args.seed)
    report: dict = {}
    try:
        for name in targets:
            print(f"{name}: fuzzing {args.seconds:.0f} s", flush=True)
            report[name] = fuzz_target(worker, name, args.seconds, rng, args.time_limit)
            r = report[name]
            print(
                f"  {r['executions']} executions, {r['findings']} findings, {r['outcomes']}",
                flush=True,
            )
    finally:
        worker.stop()
        shutil.rmtree(work, ignore_errors=True)
    import PIL

    result = {
        "command": command_line(None if argv is None else [__file__, *argv]),
        "seed": args.seed,
        "seconds_per_target": args.seconds,
        "time_limit_s": args.time_limit,
        "coverage_feedback": not args.no_coverage,
        "total_seconds": round(time.time() - started, 1),
        "total_executions": sum(r["executions"] for r in report.values()),
        "total_findings": sum(r["findings"] for r in report.values()),
        "sources": origins,
        "environment": {
            "python": platform.python_version(),
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "machine": platform.machine(),
        },
        "targets": report,
    }
    write_record(args.out, result)
    print(
        f"{result['total_executions']} executions in {result['total_seconds']} s, "
        f"{result['total_findings']} findings -> {args.out}"
    )
    return 1 if result["total_findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
