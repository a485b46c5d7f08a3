"""Emotions for many inputs at once: files, folders and videos, as rows to print or save."""

from __future__ import annotations

import csv
import json
import stat
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from ferlab.common.files import atomic_path
from ferlab.data.images import IMAGE_SUFFIXES
from ferlab.errors import DataError, FerlabError
from ferlab.vision.annotate import draw_faces
from ferlab.vision.detect import LANDMARKS
from ferlab.vision.photo import read_photo
from ferlab.vision.recognizer import EmotionRecognizer, Face
from ferlab.vision.track import SMOOTHING_HALF_LIFE, FaceTracker
from ferlab.vision.video import VIDEO_SUFFIXES, frame_rate, video_frames

FORMATS = ("table", "csv", "json", "jsonl")


@dataclass
class Row:
    """One face (or one 'no face found') of one image or video frame."""

    file: str
    face: Face | None
    index: int = 0
    frame: int | None = None
    time: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    track: int | None = None

    def to_dict(self) -> dict:
        """A JSON-ready record; ``face`` is null and ``emotion`` empty when no face was found;
        ``track`` is the face's track id in a video (null for photos)."""
        record = {"file": self.file, "frame": self.frame, "time": self.time}
        if self.face is None:
            return record | {"face": None, "track": None, "emotion": "", "note": "no face found"}
        return record | {"face": self.index, "track": self.track} | self.face.to_dict()


def is_video(path: Path) -> bool:
    """Whether ``path`` names a video file by its suffix."""
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class InputFile:
    """One input: the ``path`` it is read from, the ``name`` every row and warning gives it (the
    path as given, or the folder as given joined with its path inside it), and ``inner``, its
    path inside the folder given (its file name when named directly), which annotated copies
    mirror."""

    path: Path
    name: str
    inner: Path


def collect_inputs(paths: Iterable[str | Path], *, recursive: bool = False) -> list[InputFile]:
    """Image and video files named directly or found in folders (sorted; hidden files skipped).

    A named path that does not exist, and inside folders a file that is not a regular file
    (FIFO, device, dangling link) or not an image or video, is skipped with one warning; when
    nothing is left, the problem is raised as a :class:`DataError`.
    """
    found, skipped, missing = [], [], []
    paths = list(paths)
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            missing.append(f"{raw}: no such file or folder")
            continue
        if not path.is_dir():
            found.append(InputFile(path, str(raw), Path(path.name)))
            continue
        candidates = sorted(path.rglob("*") if recursive else path.iterdir())
        for item in candidates:
            relative = item.relative_to(path)
            if any(part.startswith(".") for part in relative.parts) or item.is_dir():
                continue
            name = (Path(raw) / relative).as_posix()
            suffix = item.suffix.lower()
            try:
                regular = stat.S_ISREG(item.stat().st_mode)
            except OSError:
                regular = False
            if suffix not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
                skipped.append(f"{name} (not an image or video)")
            elif not regular:
                skipped.append(f"{name} (not a regular file)")
            else:
                found.append(InputFile(item, name, relative))
    if not found and len(missing) == 1 and len(paths) == 1:
        raise DataError(missing[0])
    for problem in missing:
        warnings.warn(f"skipped {problem}", stacklevel=2)
    if skipped:
        shown = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        warnings.warn(f"skipped {len(skipped)} file(s): {shown}", stacklevel=2)
    if not found:
        raise DataError("no image or video found in " + ", ".join(str(p) for p in paths))
    return found


def _rows(
    file: str, faces: list[Face], top_k: int, frame=None, time=None, tracks=None
) -> list[Row]:
    if not faces:
        return [Row(file, None, frame=frame, time=time)]
    tracks = tracks or [None] * len(faces)
    return [
        Row(file, face, i, frame, None if time is None else round(time, 3), face.top(top_k), track)
        for i, (face, track) in enumerate(zip(faces, tracks, strict=True))
    ]


def _save_image(rgb: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")


def _analyze_video(
    recognizer, path, name, copy, *, every, top_k, annotate_dir, smooth, timeline
) -> Iterator[Row]:
    tracker = FaceTracker(half_life=smooth, min_confidence=recognizer.min_confidence)
    writer, seen = None, []
    try:
        for index, time, rgb in video_frames(path, every=every, max_pixels=recognizer.max_pixels):
            tracked = tracker.update(recognizer.analyze_array(rgb), time)
            tracks, faces = [t for t, _ in tracked], [f for _, f in tracked]
            rows = _rows(name, faces, top_k, frame=index, time=time, tracks=tracks)
            seen += [r for r in rows if r.face is not None]
            yield from rows
            if annotate_dir is not None:
                writer = writer or _video_writer(
                    annotate_dir / f"{copy}.annotated.mp4", rgb, path, every
                )
                import cv2

                frame = draw_faces(rgb, faces, tracks=tracks)
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
    if timeline and annotate_dir is not None:
        _save_timeline(seen, recognizer.class_names, annotate_dir / f"{copy}.timeline.png", name)


def _save_timeline(rows: list[Row], class_names: list[str], path: Path, title: str) -> None:
    """Each track's emotion probabilities over time, one panel per track, as a PNG."""
    from ferlab.common.plots import plot_emotion_timeline  # the lab extra: main names it if missing

    series: dict[int, list[tuple[float, dict[str, float]]]] = {}
    for row in rows:
        series.setdefault(row.track, []).append((row.time, row.face.probabilities))
    path.parent.mkdir(parents=True, exist_ok=True)
    plot_emotion_timeline(series, class_names, path, title=title)


def _video_writer(path: Path, first: np.ndarray, source: Path, every: int):
    """An MP4 writer at the source's frame rate divided by ``every`` (one frame per analysed one)."""
    import cv2

    capture = cv2.VideoCapture(str(source))
    fps = frame_rate(capture) / every
    capture.release()
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
    size = (first.shape[1], first.shape[0])
    writer = cv2.VideoWriter(str(path), fourcc, max(0.1, fps), size)
    if not writer.isOpened():
        raise FerlabError(f"{path}: cannot write the annotated video")
    return writer


def analyze_inputs(
    recognizer: EmotionRecognizer,
    files: list[InputFile] | list[Path],
    *,
    every: int = 25,
    top_k: int = 3,
    annotate_dir: str | Path | None = None,
    smooth: float = SMOOTHING_HALF_LIFE,
    timeline: bool = False,
) -> Iterator[Row]:
    """Rows for every face of every image, and of every ``every``-th frame of each video.

    A file that cannot be read is skipped with a warning; if none could be read, the last
    problem is raised as a :class:`DataError`. ``annotate_dir`` receives each image (PNG) and
    video (MP4) with boxes and labels drawn, and with ``timeline`` each video's per-track emotion
    timeline (PNG). In videos faces are tracked (:mod:`ferlab.vision.track`) and their
    probabilities smoothed along the track with a half-life of ``smooth`` seconds (0: none).
    """
    if timeline and annotate_dir is None:
        raise FerlabError("--timeline writes its plots into the --annotate folder: give --annotate")
    FaceTracker(half_life=smooth)  # checks smooth before any input is read
    if not isinstance(top_k, int) or top_k < 1:
        raise FerlabError(f"--top-k must be an integer >= 1, got {top_k!r}")
    annotate_dir = Path(annotate_dir) if annotate_dir is not None else None
    files = [
        f if isinstance(f, InputFile) else InputFile(Path(f), str(f), Path(Path(f).name))
        for f in files
    ]
    copies = _annotated_names(files)
    read, problems = 0, []
    for file, copy in zip(files, copies, strict=True):
        path, name = file.path, file.name
        try:
            if is_video(path):
                yield from _analyze_video(
                    recognizer,
                    path,
                    name,
                    copy,
                    every=every,
                    top_k=top_k,
                    annotate_dir=annotate_dir,
                    smooth=smooth,
                    timeline=timeline,
                )
            else:
                rgb = read_photo(path, max_pixels=recognizer.max_pixels)
                faces = recognizer.analyze_array(rgb)
                yield from _rows(name, faces, top_k)
                if annotate_dir is not None:
                    _save_image(draw_faces(rgb, faces), annotate_dir / f"{copy}.annotated.png")
            read += 1
        except DataError as exc:
            problems.append(str(exc))
            if len(files) > 1:
                warnings.warn(f"skipped {exc}", stacklevel=2)
    if not read:
        raise DataError(
            problems[-1] if len(problems) == 1 else f"none of the {len(files)} inputs could be read"
        )


def _annotated_names(files: list[InputFile]) -> list[str]:
    """Where each input's annotated copy goes under ``--annotate``: its path inside the folder
    given (the tree mirrored), with the folders above added where two would collide."""
    inner = [f.inner.as_posix() for f in files]
    if len(set(inner)) == len(inner):
        return inner
    return [Path(f.name).as_posix().lstrip("/").replace("../", "") for f in files]


def write_rows(rows: Iterable[Row], stream: TextIO, fmt: str, class_names: list[str]) -> int:
    """Write rows as ``table``, ``csv``, ``json`` or ``jsonl`` while they come; return the count."""
    if fmt not in FORMATS:
        raise FerlabError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    count = 0
    if fmt == "csv":
        marks = [f"{name}_{axis}" for name in LANDMARKS for axis in "xy"]
        columns = ["file", "frame", "time", "face", "track", "x", "y", "w", "h", "score"]
        columns += marks + ["emotion"]
        writer = csv.writer(stream)
        writer.writerow(columns + class_names)
    if fmt == "json":
        stream.write("[")
    for row in rows:
        record = row.to_dict()
        if fmt == "table":
            stream.write(_table_line(row) + "\n")
        elif fmt == "csv":
            box = record.get("box") or {}
            probs = record.get("probabilities") or {}
            points = record.get("landmarks") or {}
            writer.writerow(
                [
                    record["file"],
                    _blank(record["frame"]),
                    _blank(record["time"]),
                    _blank(record.get("face")),
                    _blank(record.get("track")),
                ]
                + [box.get(k, "") for k in "xywh"]
                + [record.get("score", "")]
                + [points[n][a] if n in points else "" for n in LANDMARKS for a in (0, 1)]
                + [record["emotion"]]
                + [f"{probs[n]:.6f}" if n in probs else "" for n in class_names]
            )
        else:
            text = json.dumps(record)
            stream.write(("," if count else "") + "\n" + text if fmt == "json" else text + "\n")
        stream.flush()
        count += 1
    if fmt == "json":
        stream.write("\n]\n")
    return count


def _blank(value) -> str:
    return "" if value is None else str(value)


def _table_line(row: Row) -> str:
    where = row.file if row.frame is None else f"{row.file} @{row.time:.2f}s"
    if row.face is None:
        return f"{where}  no face found"
    b = row.face.box
    others = "  ".join(f"{name} {p:.2f}" for name, p in row.top)
    track = "" if row.track is None else f" track {row.track}"
    eyes = "".join(f" ({x:.0f},{y:.0f})" for x, y in b.landmarks[:2])
    eyes = f" eyes{eyes}" if eyes else ""
    return (
        f"{where}  face {row.index}{track} at ({b.x},{b.y} {b.w}x{b.h}) score {b.score:.2f}"
        f"{eyes}  {others}"
    )
