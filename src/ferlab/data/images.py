"""Reading labelled images from class sub-folders, in a directory, a tar or a zip, with Pillow."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferlab.data.integrity import ARCHIVE_ERRORS, finish_tar, one_line, open_tar, open_zip
from ferlab.errors import DataError, ImageTooLarge, ModelFileError, UnknownImageFormat

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_FILE_BYTES = 64 * 1024 * 1024  # one image or batch file; larger ones are refused unread
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
MAX_PIXELS = 40_000_000  # larger images are refused from their header, before decoding


@dataclass
class LabeledImages:
    """uint8 images (N, H, W[, C]), integer labels, class names and each sample's split name."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    splits: np.ndarray
    names: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.splits = np.asarray(self.splits, dtype=str)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask_or_index) -> LabeledImages:
        """The samples selected by a boolean mask or index array."""
        return LabeledImages(
            self.images[mask_or_index],
            self.labels[mask_or_index],
            self.class_names,
            self.splits[mask_or_index],
            None if self.names is None else self.names[mask_or_index],
        )

    def split(self, name: str) -> LabeledImages:
        """The samples of one split (e.g. ``train``, ``public_test``)."""
        return self.subset(self.splits == name)


class BadInputReport:
    """Collects bad rows or files; raises in strict mode, else warns once with a count."""

    def __init__(self, source: str, strict: bool) -> None:
        self.source = source
        self.strict = strict
        self.problems: list[str] = []

    def add(self, where: str, why: str) -> None:
        message = f"{where}: {why}"
        if self.strict:
            raise DataError(f"{self.source}: {message}")
        self.problems.append(message)

    def finish(self) -> list[str]:
        if self.problems:
            shown = "; ".join(self.problems[:5])
            more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
            warnings.warn(
                f"{self.source}: skipped {len(self.problems)} bad item(s): {shown}{more}",
                stacklevel=3,
            )
        return self.problems


def is_tar(path: Path) -> bool:
    """Whether ``path`` names a tar archive by its suffix."""
    return path.name.lower().endswith(TAR_SUFFIXES)


def is_zip(path: Path) -> bool:
    """Whether ``path`` names a zip archive by its suffix."""
    return path.name.lower().endswith(ZIP_SUFFIXES)


def is_archive(path: Path) -> bool:
    """Whether ``path`` names an archive ferlab reads (tar, compressed or not, or zip)."""
    return is_tar(path) or is_zip(path)


def load_image(
    source: bytes | os.PathLike | io.BytesIO, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Open and fully decode one image, checking its pixel count from the header first.

    Raises ValueError (one line) on unreadable, truncated or over-large images, so that a
    decompression bomb costs neither time nor memory: :class:`ImageTooLarge` for too many
    pixels, :class:`UnknownImageFormat` for data that is no image Pillow knows.
    """
    source = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            width, height = image.size
            if width * height > max_pixels:
                image.close()
                raise ImageTooLarge(
                    f"{width}x{height} is {width * height:,} pixels, more than the "
                    f"{max_pixels:,} accepted"
                )
            image.load()
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("image too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise UnknownImageFormat("not an image, or an unsupported format") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"unreadable or truncated image ({exc.__class__.__name__})") from None


def decode_image(
    data: bytes | os.PathLike, size: tuple[int, int] | None, mode: str
) -> tuple[np.ndarray, bool]:
    """Decode one image to a uint8 array in ``mode`` ('L' or 'RGB'), resized to ``size`` (W, H).

    Returns the array and whether it had to be resized. Raises ValueError on unreadable data.
    """
    with load_image(data) as image:
        return fit_image(image, size, mode)


def fit_image(
    image: Image.Image, size: tuple[int, int] | None, mode: str
) -> tuple[np.ndarray, bool]:
    """``image`` as a uint8 array in ``mode`` ('L' (H, W) or 'RGB' (H, W, 3)), resized
    (bilinear) to ``size`` (W, H) unless None, and whether it had to be resized: how every
    whole image becomes a model's input."""
    converted = image.convert(mode)
    resized = size is not None and converted.size != size
    if resized:
        converted = converted.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(converted, dtype=np.uint8), resized


def target_format(input_shape) -> tuple[tuple[int, int], str]:
    """Pillow size (W, H) and mode ('L' or 'RGB') for a model's input shape (H, W) or (H, W, C)."""
    if not input_shape or len(input_shape) not in (2, 3):
        raise ModelFileError(
            f"the model does not record a 2-D image input shape (found {input_shape!r})"
        )
    height, width = int(input_shape[0]), int(input_shape[1])
    channels = int(input_shape[2]) if len(input_shape) == 3 else 1
    if channels not in (1, 3):
        raise ModelFileError(f"unsupported number of image channels: {channels}")
    return (width, height), ("RGB" if channels == 3 else "L")


def _too_large(size: int) -> Callable[[], bytes]:
    def too_large() -> bytes:
        raise ValueError(f"{size:,} bytes, more than the {MAX_FILE_BYTES:,} accepted")

    return too_large


def _read_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], bytes]:
    if member.size > MAX_FILE_BYTES:
        return _too_large(member.size)
    handle = archive.extractfile(member)
    payload = handle.read() if handle else b""
    return lambda: payload


def _iter_tar(
    path: Path, wanted: Callable[[PurePosixPath], bool] | None
) -> Iterator[tuple[PurePosixPath, Callable[[], bytes]]]:
    # Every header up to the end marker must be valid, and the compressed stream is read to its
    # end so that its CRC is checked: a damaged archive is refused, never read in part.
    with open_tar(path) as archive:
        for member in archive:
            rel = PurePosixPath(member.name)
            if not member.isfile() or (wanted is not None and not wanted(rel)):
                continue
            yield rel, _read_member(archive, member)
        finish_tar(archive)


def _check_declared_size(info: zipfile.ZipInfo, start_dir: int) -> None:
    """Refuse a declared size that the member's stored bytes cannot hold: a damaged directory
    entry, not a large file (its compressed bytes lie before the directory; stored, they are
    its size; deflate expands at most about 1032 times)."""
    stored = info.compress_type == zipfile.ZIP_STORED
    if (
        info.header_offset + 30 + info.compress_size > start_dir
        or (stored and info.file_size != info.compress_size)
        or info.file_size > 1100 * info.compress_size + (1 << 16)
    ):
        raise zipfile.BadZipFile(
            f"{info.filename}: declares {info.file_size:,} bytes from {info.compress_size:,} "
            "compressed"
        )


def _iter_zip(
    path: Path, wanted: Callable[[PurePosixPath], bool] | None
) -> Iterator[tuple[PurePosixPath, Callable[[], bytes]]]:
    # zipfile checks each local header's name against the central directory when a member is
    # opened, and the CRC-32 when it is read to its end. Every member is opened, wanted or not,
    # so that a damaged name in the directory is refused rather than taken for another file.
    with open_zip(path) as archive:
        try:
            for info in archive.infolist():
                if not info.filename:  # zipfile's is_dir() fails on it
                    raise zipfile.BadZipFile("an entry without a name")
                rel = PurePosixPath(info.filename)
                take = not info.is_dir() and (wanted is None or wanted(rel))
                with archive.open(info) as handle:
                    if not take:
                        continue
                    if info.file_size > MAX_FILE_BYTES:
                        _check_declared_size(info, archive.start_dir)
                        read = _too_large(info.file_size)
                    else:
                        payload = handle.read(info.file_size + 1)
                        if len(payload) != info.file_size:  # zipfile trusts the directory
                            raise zipfile.BadZipFile(
                                f"{info.filename}: {len(payload):,} bytes, "
                                f"its directory entry says {info.file_size:,}"
                            )
                        read = lambda payload=payload: payload  # noqa: E731
                yield rel, read
        except ARCHIVE_ERRORS as exc:
            raise DataError(f"{path}: corrupt or truncated archive ({one_line(exc)})") from None


def _read_file(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{size:,} bytes, more than the {MAX_FILE_BYTES:,} accepted")
    with open(path, "rb") as handle:
        return handle.read(MAX_FILE_BYTES + 1)


def _regular_inside(full: Path, root: Path) -> str | None:
    """Why ``full`` is skipped (not a regular file, or a link leading out of ``root``), or None."""
    try:
        if full.is_symlink() and not full.resolve().is_relative_to(root):
            return "a symbolic link leading outside the data folder"
        mode = full.stat().st_mode
    except OSError:
        return "a broken symbolic link"
    return None if stat.S_ISREG(mode) else "not a regular file"


def iter_files(
    path: Path,
    wanted: Callable[[PurePosixPath], bool] | None = None,
    report: BadInputReport | None = None,
) -> Iterator[tuple[PurePosixPath, Callable[[], bytes]]]:
    """(relative path, read-bytes function) for every regular file under a folder or in an archive.

    Files that ``wanted`` rejects are skipped before anything is read. Only regular files are
    read: FIFOs, devices, broken links and links leading out of the folder are skipped (and
    named in ``report``). A file over :data:`MAX_FILE_BYTES` raises ValueError when read. A
    damaged archive (tar, compressed or not, or zip) raises DataError naming it.
    """
    if is_tar(path):
        yield from _iter_tar(path, wanted)
        return
    if is_zip(path):
        yield from _iter_zip(path, wanted)
        return
    root = path.resolve()
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = Path(folder) / name
            rel = PurePosixPath(full.relative_to(path).as_posix())
            if wanted is not None and not wanted(rel):
                continue
            why = _regular_inside(full, root)
            if why is not None:
                if report is not None:
                    report.add(str(rel), why)
                continue
            yield rel, (lambda f=full: _read_file(f))


def read_class_folders(
    path: Path,
    class_names: list[str],
    split_folders: dict[str, str],
    *,
    size: tuple[int, int],
    mode: str,
    strict: bool = False,
    split_of_file=None,
    aliases: dict[str, str] | None = None,
) -> LabeledImages:
    """Read ``<split folder>/<class>/<image>`` under ``path`` (folder, tar or zip), at any depth.

    ``split_folders`` maps folder names (``train``) to split names; ``split_of_file`` may refine the
    split from a file name. Images of the wrong size or unknown class are bad input.
    """
    report = BadInputReport(str(path), strict)
    class_index = {name: i for i, name in enumerate(class_names)}
    for alias, name in (aliases or {}).items():
        class_index[alias] = class_index[name]
    images, labels, splits, names = [], [], [], []

    def split_position(rel: PurePosixPath) -> int | None:
        """Index of the split folder in ``<split>/<class>/<image>`` at the end of ``rel``."""
        parts = [p.lower() for p in rel.parts]
        positions = [i for i, p in enumerate(parts[:-2]) if p in split_folders]
        return positions[-1] if positions and len(parts) == positions[-1] + 3 else None

    in_layout = lambda rel: split_position(rel) is not None  # noqa: E731
    for rel, read in iter_files(path, wanted=in_layout, report=report):
        parts = [p.lower() for p in rel.parts]
        pos = split_position(rel)
        if rel.name.startswith(".") or rel.suffix.lower() not in IMAGE_SUFFIXES:
            report.add(str(rel), "not an image file")
            continue
        class_name = parts[pos + 1]
        if class_name not in class_index:
            report.add(str(rel), f"unknown class folder {rel.parts[pos + 1]!r}")
            continue
        try:
            array, resized = decode_image(read(), None, mode)
        except (ValueError, OSError) as exc:
            report.add(str(rel), str(exc))
            continue
        if array.shape[1::-1] != size:
            report.add(
                str(rel),
                f"image is {array.shape[1]}x{array.shape[0]}, expected {size[0]}x{size[1]}",
            )
            continue
        split = split_folders[parts[pos]]
        if split_of_file is not None:
            split = split_of_file(rel.name, split)
        images.append(array)
        labels.append(class_index[class_name])
        splits.append(split)
        names.append(str(rel))
    skipped = report.finish()
    if not images:
        raise DataError(
            f"{path}: no images found in the layout <{'|'.join(sorted(set(split_folders)))}>/<class>/<image>"
        )
    return LabeledImages(
        np.stack(images),
        np.array(labels),
        list(class_names),
        np.array(splits),
        np.array(names),
        skipped,
    )
