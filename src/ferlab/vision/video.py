"""Reading frames of a video file with OpenCV (its wheels carry FFmpeg)."""

from __future__ import annotations

import os
import warnings
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

    Raises :class:`DataError` when not even the first frame can be read. Frames that cannot be
    decoded are reported in one warning with their times (the decoder's own log is silenced),
    and so is a video that ends before the frame count its header gives; the frames around them
    are still read, with their own time stamps.
    """
    import cv2

    if every < 1:
        raise DataError(f"--every must be >= 1, got {every}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    # FFmpeg prints every decoding error itself; ferlab's warnings say what was lost instead.
    # Read when OpenCV's FFmpeg backend starts, so this applies from the first video read.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise DataError(f"{path}: not a readable video")
        fps = frame_rate(capture)
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        index, read, last_time, lost, skip = 0, 0, None, [], 1
        while True:
            if not capture.grab():
                if not expected or index >= expected:
                    break
                # A damaged stretch: step over it, further each time, and read on from there.
                index += skip
                skip *= 2
                capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                continue
            skip = 1
            position = capture.get(cv2.CAP_PROP_POS_FRAMES)
            index = int(position) - 1 if position and position >= 1 else index
            stamp = capture.get(cv2.CAP_PROP_POS_MSEC)
            time = stamp / 1000 if stamp and stamp > 0 else index / fps
            if last_time is not None and time - last_time > 1.5 / fps:
                lost.append((last_time + 1 / fps, time - 1 / fps))
            last_time = time
            read += 1
            if index % every == 0:
                ok, frame = capture.retrieve()
                if not ok or frame is None:
                    lost.append((time, time))
                    index += 1
                    continue
                if frame.shape[0] * frame.shape[1] > max_pixels:
                    raise DataError(
                        f"{path}: frames of {frame.shape[1]}x{frame.shape[0]} are too large"
                    )
                yield index, time, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
        if read == 0:
            raise DataError(f"{path}: no frame could be read (corrupt or truncated video)")
        _warn_lost(path, lost, read, expected, last_time)
    finally:
        capture.release()


def _warn_lost(path: Path, lost, read: int, expected: int, last_time: float | None) -> None:
    """One warning for the frames of ``path`` that could not be decoded, if any."""
    parts = []
    if lost:
        spans = ", ".join(
            f"{a:.2f} s" if abs(b - a) < 1e-6 else f"{a:.2f}-{b:.2f} s" for a, b in lost[:5]
        )
        more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
        parts.append(f"frames at {spans}{more} could not be decoded")
    if expected and read < expected - 1:
        parts.append(
            f"{read} of the {expected} frames its header gives could be read, the last at "
            f"{last_time or 0:.2f} s (damaged or cut short)"
        )
    if parts:
        warnings.warn(f"{path}: " + "; ".join(parts), stacklevel=3)
