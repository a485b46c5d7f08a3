"""Reading frames of a video file with OpenCV (its wheels carry FFmpeg)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ferlab.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def frame_rate(capture) -> float:
    """Frames per second of an open ``cv2.VideoCapture`` (25 when the file does not say)."""
    import cv2

    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if fps and 0 < fps < 1000 else 25.0


def video_frames(
    path: str | Path, *, every: int = 1, max_pixels: int = 40_000_000
) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, time in seconds, RGB frame (H, W, 3)) for every ``every``-th frame.

    Raises :class:`DataError` when not even the first frame can be read; a video cut short
    ends at its last readable frame.
    """
    import cv2

    if every < 1:
        raise DataError(f"--every must be >= 1, got {every}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(f"{path}: not a readable video")
        fps = frame_rate(capture)
        index = 0
        while True:
            ok = capture.grab()
            if not ok:
                break
            if index % every == 0:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    break
                if frame.shape[0] * frame.shape[1] > max_pixels:
                    raise DataError(
                        f"{path}: frames of {frame.shape[1]}x{frame.shape[0]} are too large"
                    )
                yield index, index / fps, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
        if index == 0:
            raise DataError(f"{path}: no frame could be read (corrupt or truncated video)")
    finally:
        capture.release()
