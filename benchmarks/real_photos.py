"""Real photos with faces counted and boxed by eye, for face-detector benchmarks.

The photos themselves are not in the repository: they come from registry
packages (Debian's ``opencv-doc``, scikit-image's ``skimage.data``,
matplotlib's sample data and scikit-learn's sample images) and are found
where those packages install them. ``photo_faces.json`` next to this file is
the manifest: each photo's source, path, size, tags, face boxes with flags,
and regions to ignore; its header says how it was made and the license notes
per source.

Usage::

    from benchmarks.real_photos import photo_set
    for photo in photo_set():
        photo.image  # (H, W, 3) uint8 RGB
        photo.boxes  # [(x, y, w, h), ...] faces counted by eye
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MANIFEST = Path(__file__).with_name("photo_faces.json")
OPENCV_DOC_FOLDERS = (Path("/usr/share/doc/opencv-doc"),)


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class PhotoEntry:
    source: str
    path: str
    image: np.ndarray = field(repr=False)
    faces: tuple[Face, ...]
    tags: tuple[str, ...]
    ignore: tuple[tuple[int, int, int, int], ...] = ()
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.source}:{self.path}"

    @property
    def boxes(self) -> list[tuple[int, int, int, int]]:
        return [face.box for face in self.faces]

    @property
    def has_faces(self) -> bool:
        return bool(self.faces)


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def opencv_doc_folder() -> Path | None:
    """The folder where Debian's opencv-doc put its files, or None."""
    for folder in OPENCV_DOC_FOLDERS:
        if (folder / "examples" / "data").is_dir() or (folder / "opencv4").is_dir():
            return folder
    return None


def _rgb_from_file(path: Path | str) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _as_rgb(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3], dtype=np.uint8)


def _loader(source: str):
    """A function path -> RGB array for one source, or None if not installed."""
    if source == "opencv-doc":
        folder = opencv_doc_folder()
        if folder is None:
            return None
        return lambda path: _rgb_from_file(folder / path)
    if source == "scikit-image":
        try:
            import skimage.data
        except ImportError:
            return None
        return lambda name: _as_rgb(getattr(skimage.data, name)())
    if source == "matplotlib":
        try:
            from matplotlib.cbook import get_sample_data
        except ImportError:
            return None
        return lambda name: _rgb_from_file(get_sample_data(name, asfileobj=False))
    if source == "scikit-learn":
        try:
            from sklearn.datasets import load_sample_image
        except ImportError:
            return None
        return lambda name: _as_rgb(load_sample_image(name))
    raise ValueError(f"unknown photo source {source!r}")


_INSTALL_HINT = {
    "opencv-doc": "apt-get install opencv-doc",
    "scikit-image": "pip install scikit-image",
    "matplotlib": "pip install matplotlib",
    "scikit-learn": "pip install scikit-learn",
}


def photo_set(*, require_all: bool = False) -> list[PhotoEntry]:
    """Every photo of the manifest whose source is installed, in manifest order.

    A source that is not installed is skipped with one warning, or raises
    FileNotFoundError when ``require_all``; so does a missing file of an
    installed source. A photo whose size differs from the manifest raises
    ValueError (its boxes would be wrong).
    """
    entries = load_manifest()["photos"]
    loaders: dict[str, object] = {}
    photos: list[PhotoEntry] = []
    for entry in entries:
        source = entry["source"]
        if source not in loaders:
            loaders[source] = _loader(source)
            if loaders[source] is None:
                message = (
                    f"real photos: source {source!r} is not installed "
                    f"({_INSTALL_HINT.get(source, '')}); its photos are skipped"
                )
                if require_all:
                    raise FileNotFoundError(message)
                warnings.warn(message, stacklevel=2)
        load = loaders[source]
        if load is None:
            continue
        try:
            image = load(entry["path"])
        except (FileNotFoundError, AttributeError, OSError) as error:
            message = f"real photos: {source}:{entry['path']} not found ({error})"
            if require_all:
                raise FileNotFoundError(message) from error
            warnings.warn(message, stacklevel=2)
            continue
        height, width = image.shape[:2]
        if (width, height) != (entry["width"], entry["height"]):
            raise ValueError(
                f"real photos: {source}:{entry['path']} is {width}x{height}, "
                f"the manifest says {entry['width']}x{entry['height']}"
            )
        photos.append(
            PhotoEntry(
                source=source,
                path=entry["path"],
                image=image,
                faces=tuple(
                    Face(tuple(face["box"]), tuple(face.get("flags", ())))
                    for face in entry["faces"]
                ),
                tags=tuple(entry.get("tags", ())),
                ignore=tuple(tuple(region) for region in entry.get("ignore", ())),
                note=entry.get("note", ""),
            )
        )
    return photos


if __name__ == "__main__":
    photos = photo_set()
    faces = sum(len(p.faces) for p in photos)
    print(f"{len(photos)} photos, {faces} faces")
    for p in photos:
        flags = sorted({f for face in p.faces for f in face.flags})
        print(f"{p.name:55s} {p.image.shape[1]}x{p.image.shape[0]} faces={len(p.faces)} {flags}")
