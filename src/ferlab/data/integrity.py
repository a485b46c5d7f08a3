"""Integrity of data containers: archives read whole or refused, published checksums verified.

A tar reader stops at the archive's end marker, so the gzip (bz2, xz) trailer and its CRC are
never read, and a damaged header in the middle of a tar silently ends the archive there; JPEG
decoding tolerates garbage. Here a tar is read with headers that must all be valid up to a
proper end marker, and its compressed stream is read to its end so that the decompressor checks
the CRC. Zip members are checked by zipfile (local header against central directory, CRC-32 on
read). A ``SHA256SUMS`` file beside a data file, as data sets are published, is verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ferlab.errors import DataError

SUMS_NAME = "SHA256SUMS"
# Errors that decompressors and archive readers raise on damaged input.
ARCHIVE_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    NotImplementedError,  # zipfile: unknown compression method, version or flag bits
    RuntimeError,  # zipfile: a member flagged as encrypted
    UnicodeDecodeError,
)
_GNU_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")
_BSD_LINE = re.compile(r"^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (what the CLI prints)."""
    text = " ".join(str(exc).split())
    return text or exc.__class__.__name__


class _StrictTarInfo(tarfile.TarInfo):
    """A tar header that must be valid: a bad checksum, a short block or the end of the file
    where a header belongs is an error, not a quiet end of the archive.

    ``tarfile`` ends an archive at the first header it cannot read (after the first member), so
    one damaged header silently drops every member after it. Only an all-zero block, the proper
    end marker, ends the archive here.
    """

    @classmethod
    def frombuf(cls, buf, encoding, errors):
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.EOFHeaderError:
            raise
        except tarfile.HeaderError as exc:
            raise tarfile.SubsequentHeaderError(f"damaged tar header ({one_line(exc)})") from None


@contextlib.contextmanager
def open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """A tar (plain, gzip, bz2 or xz) opened with strict headers; raises DataError naming it.

    Iterate it in order, then call :func:`finish_tar` to read the compressed stream to its end.
    """
    try:
        with tarfile.open(path, "r:*", tarinfo=_StrictTarInfo) as archive:
            yield archive
    except ARCHIVE_ERRORS as exc:
        raise DataError(f"{path}: corrupt or truncated archive ({one_line(exc)})") from None


def finish_tar(archive: tarfile.TarFile) -> None:
    """Read the rest of the (decompressed) stream after the end marker, so that gzip, bz2 and
    xz check their CRC and length and refuse trailing garbage. Raises the reader's error."""
    while archive.fileobj.read(1 << 20):
        pass


def _declared_entries(handle) -> int | None:
    """The entry count that a zip's end-of-central-directory record declares (None for zip64,
    whose count zipfile takes from its own record, or when no record is found)."""
    handle.seek(0, 2)
    size = handle.tell()
    span = min(size, 22 + 0xFFFF)
    handle.seek(size - span)
    tail = handle.read(span)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    total = struct.unpack("<H", tail[at + 10 : at + 12])[0]
    return None if total == 0xFFFF else total


def open_zip(path: Path) -> zipfile.ZipFile:
    """An open zip archive; raises DataError naming it when its directory is unreadable.

    zipfile stops reading the central directory where its declared size ends, so a damaged
    length field silently swallows the entries after it: the entries read must be as many as
    the end record declares.
    """
    try:
        archive = zipfile.ZipFile(path)
        declared = _declared_entries(archive.fp)
    except ARCHIVE_ERRORS as exc:
        raise DataError(f"{path}: corrupt or truncated archive ({one_line(exc)})") from None
    found = len(archive.infolist())
    if declared is not None and declared != found:
        archive.close()
        raise DataError(
            f"{path}: corrupt archive (its directory declares {declared} entries, {found} readable)"
        )
    return archive


def read_sums(folder: Path) -> dict[str, str]:
    """File name -> expected SHA-256 from ``folder/SHA256SUMS`` (GNU or BSD lines), or {}."""
    sums_file = folder / SUMS_NAME
    if not sums_file.is_file():
        return {}
    try:
        text = sums_file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"{sums_file}: unreadable ({one_line(exc)})") from None
    sums: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        gnu, bsd = _GNU_LINE.match(line), _BSD_LINE.match(line)
        if gnu:
            digest, name = gnu.groups()
        elif bsd:
            name, digest = bsd.groups()
        else:
            continue
        sums[name.strip().removeprefix("./")] = digest.lower()
    return sums


def expected_sha256(path: Path) -> str | None:
    """The SHA-256 that a ``SHA256SUMS`` beside ``path`` lists for it, or None."""
    path = Path(path)
    if not path.is_file():
        return None
    return read_sums(path.parent).get(path.name)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path) -> dict | None:
    """Check ``path`` against the ``SHA256SUMS`` beside it; DataError naming it on a mismatch.

    Returns what was verified (to record in the cache), or None when no checksum is listed.
    """
    path = Path(path)
    expected = expected_sha256(path)
    if expected is None:
        return None
    try:
        actual = file_sha256(path)
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({one_line(exc)})") from None
    if actual != expected:
        raise DataError(
            f"{path}: SHA-256 {actual[:16]}... does not match {expected[:16]}... listed in "
            f"{path.parent / SUMS_NAME}; the file is damaged or not the published one"
        )
    return {"file": path.name, "sums": SUMS_NAME, "sha256": actual}


def arrays_digest(meta: dict, arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of metadata (as canonical JSON) and every array's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode("utf-8"))
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode("utf-8"))
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
