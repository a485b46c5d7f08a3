"""What a worker does: analyse a batch of photos, or one time range of a video.

Runs wherever the task is sent (this process, a pool process, a Dask worker); each process loads
the recogniser once per :class:`Settings` and keeps it. Results are plain rows (dicts by column
name, :mod:`ferlab.collection.store`) for photos and raw faces per frame for video ranges, whose
tracks the driver joins across the ranges in time order.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ferlab.errors import DataError
from ferlab.vision.detect import DEFAULT_DETECTOR, LANDMARKS

if TYPE_CHECKING:
    from ferlab.vision.recognizer import EmotionRecognizer, Face

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Settings:
    """How every input is analysed (the options of ``ferlab predict`` that change results:
    ``every`` analysed video frame, ``smooth`` the tracks' half-life in seconds), and ``threads``
    for the model and detector in each process."""

    model: str | None = None
    detector: str = DEFAULT_DETECTOR
    min_face: int | None = None
    min_score: float | None = None
    tta: str | None = None
    min_confidence: float = 0.0
    every: int = 25
    smooth: float = 0.5
    threads: int = 1

    def recorded(self) -> dict:
        """The settings a resumed run must share with the first (all but ``threads``)."""
        record = asdict(self)
        record.pop("threads")
        return record


@dataclass(frozen=True, slots=True)
class PhotoTask:
    """Photos analysed one after another: (path, name) pairs."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class RangeTask:
    """The frames ``start`` (included) to ``stop`` (excluded) of a video, every ``every``-th
    frame counted from the video's first; ``part`` is the range's place in the video."""

    path: str
    name: str
    start: int
    stop: int
    part: int


_RECOGNIZERS: dict[Settings, EmotionRecognizer] = {}


def recognizer(settings: Settings) -> EmotionRecognizer:
    """This process's recogniser for ``settings``, loaded on first use and kept."""
    found = _RECOGNIZERS.get(settings)
    if found is None:
        from ferlab.vision.recognizer import EmotionRecognizer

        found = EmotionRecognizer(
            settings.model,
            detector=settings.detector,
            min_face=settings.min_face,
            min_score=settings.min_score,
            threads=settings.threads,
            tta=settings.tta,
            min_confidence=settings.min_confidence,
        )
        _RECOGNIZERS[settings] = found
    return found


def init_process(settings: Settings) -> None:
    """Set a worker process's threads and load its recogniser (a pool's initializer)."""
    import cv2

    for var in THREAD_VARS:
        os.environ[var] = str(settings.threads)
    cv2.setNumThreads(settings.threads)
    recognizer(settings)


def face_rows(faces: list[Face], class_names: list[str]) -> list[dict]:
    """One row per face (largest first), or one ``no_face`` row when there is none."""
    if not faces:
        return [{"status": "no_face", "emotion": ""}]
    rows = []
    for index, face in enumerate(faces):
        box = face.box
        row = {
            "status": "face",
            "face": index,
            "x": box.x,
            "y": box.y,
            "w": box.w,
            "h": box.h,
            "score": float(box.score),
            "emotion": face.emotion,
            "probability": face.probability,
        }
        for name, (px, py) in zip(LANDMARKS, box.landmarks, strict=False):
            row[f"{name}_x"], row[f"{name}_y"] = float(px), float(py)
        for name in class_names:
            row[f"prob_{name}"] = face.probabilities.get(name)
        rows.append(row)
    return rows


def run_task(task: PhotoTask | RangeTask, settings: Settings):
    """A task's results: for photos a list of ``(name, rows)`` or ``(name, error text)``; for a
    video range ``(part, frames)`` with ``(frame, time, faces)`` per analysed frame, or
    ``(part, error text)`` when the video cannot be read."""
    found = recognizer(settings)
    if isinstance(task, RangeTask):
        try:
            return task.part, list(_range_faces(found, task, settings.every))
        except DataError as exc:
            return task.part, str(exc)
    from ferlab.vision.photo import read_photo

    results = []
    for path, name in task.items:
        try:
            rgb = read_photo(path, max_pixels=found.max_pixels)
            results.append((name, face_rows(found.analyze_array(rgb), found.class_names)))
        except DataError as exc:
            results.append((name, str(exc)))
    return results


def video_length(path: str) -> tuple[int, float]:
    """(frames its header gives, frames per second) of a video; (0, fps) when it does not say,
    and raises :class:`DataError` when it cannot be opened."""
    import cv2

    from ferlab.vision.video import frame_rate

    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise DataError(f"{path}: not a readable video")
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)), frame_rate(capture)
    finally:
        capture.release()


def _range_faces(found: EmotionRecognizer, task: RangeTask, every: int):
    """(frame, time, faces) for each ``every``-th frame in the range."""
    import cv2

    from ferlab.vision.video import frame_rate

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(task.path)
    try:
        if not capture.isOpened():
            raise DataError(f"{task.name}: not a readable video")
        fps = frame_rate(capture)
        if task.start:
            capture.set(cv2.CAP_PROP_POS_FRAMES, task.start)
        index, read = task.start, 0
        while task.stop < 0 or index < task.stop:
            if not capture.grab():
                break
            read += 1
            if index % every == 0:
                ok, frame = capture.retrieve()
                if ok and frame is not None:
                    if frame.shape[0] * frame.shape[1] > found.max_pixels:
                        raise DataError(f"{task.name}: frames of {frame.shape[1]}x"
                                        f"{frame.shape[0]} are too large")  # fmt: skip
                    stamp = capture.get(cv2.CAP_PROP_POS_MSEC)
                    time = stamp / 1000 if stamp and stamp > 0 else index / fps
                    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                    yield index, round(time, 3), found.analyze_array(rgb)
            index += 1
        if read == 0 and task.start == 0:
            raise DataError(f"{task.name}: no frame could be read (corrupt or truncated video)")
    finally:
        capture.release()
