"""Following faces through a video: one track id per face, and emotions smoothed along it.

Each analysed frame's faces are matched to the tracks seen in the last :data:`MAX_GAP_SECONDS`
greedily, most similar pair first. Two boxes are similar when they overlap (IoU) or when their
centres are close for their size, since with ``--every 25`` a moving head may not overlap its
box of a second ago; boxes whose sizes differ by more than :data:`MAX_SIZE_RATIO` never match.
A face that matches no track starts a new one, numbered from 1 in order of appearance.

Smoothing is an exponential moving average of each track's probabilities over time: a frame
``dt`` seconds after the track's last one gets the weight ``1 - 0.5 ** (dt / half_life)``, so that
the result does not depend on how many frames are analysed per second; ``half_life=0`` leaves the
probabilities as each frame gave them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ferlab.errors import FerlabError
from ferlab.vision.detection import Detection

if TYPE_CHECKING:  # the recognizer's imports are not needed to parse predict's options
    from ferlab.vision.recognizer import Face

MIN_SIMILARITY = 0.3
MAX_SIZE_RATIO = 2.0
MAX_GAP_SECONDS = 2.0
SMOOTHING_HALF_LIFE = 0.5  # seconds: the default of ``ferlab predict --smooth``


def similarity(a: Detection, b: Detection) -> float:
    """How alike two boxes are as positions of one face, in [0, 1]: their IoU, or, when larger,
    1 minus their centres' distance over their mean side; 0 when their sizes differ too much."""
    side_a, side_b = max(a.w, a.h), max(b.w, b.h)
    if max(side_a, side_b) > MAX_SIZE_RATIO * max(1, min(side_a, side_b)):
        return 0.0
    ix = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    iou = inter / max(1, a.w * a.h + b.w * b.h - inter)
    distance = math.hypot(a.x + a.w / 2 - b.x - b.w / 2, a.y + a.h / 2 - b.y - b.h / 2)
    return max(iou, 1.0 - distance / ((side_a + side_b) / 2))


@dataclass
class _Track:
    id: int
    box: Detection
    time: float
    probabilities: dict[str, float]


class FaceTracker:
    """Gives each face of successive video frames a track id and smoothed probabilities.

    ``half_life`` is the smoothing's half-life in seconds (0: no smoothing); a face whose smoothed
    top probability is under ``min_confidence`` is ``"uncertain"``, as the recognizer reports
    it. Call :meth:`update` once per analysed frame, in time order.
    """

    def __init__(
        self, *, half_life: float = SMOOTHING_HALF_LIFE, min_confidence: float = 0.0
    ) -> None:
        if not isinstance(half_life, int | float) or isinstance(half_life, bool) or half_life < 0:
            raise FerlabError(f"--smooth must be a number of seconds >= 0, got {half_life!r}")
        self.half_life = float(half_life)
        self.min_confidence = float(min_confidence)
        self._tracks: list[_Track] = []
        self._next_id = 1

    def update(self, faces: list[Face], time: float) -> list[tuple[int, Face]]:
        """(track id, face with smoothed probabilities) for each of ``faces``, in their order, at
        ``time`` seconds into the video."""
        from ferlab.vision.recognizer import labelled_face

        live = [t for t in self._tracks if time - t.time <= MAX_GAP_SECONDS]
        pairs = sorted(
            (
                (similarity(face.box, track.box), i, j)
                for i, face in enumerate(faces)
                for j, track in enumerate(live)
            ),
            reverse=True,
        )
        matched: dict[int, _Track] = {}
        taken: set[int] = set()
        for score, i, j in pairs:
            if score < MIN_SIMILARITY:
                break
            if i not in matched and j not in taken:
                matched[i] = live[j]
                taken.add(j)
        result = []
        for i, face in enumerate(faces):
            track = matched.get(i)
            if track is None:
                track = _Track(self._next_id, face.box, time, dict(face.probabilities))
                self._next_id += 1
                live.append(track)
            else:
                track.probabilities = self._smoothed(track, face, time)
                track.box, track.time = face.box, time
            smoothed = labelled_face(face.box, track.probabilities, self.min_confidence)
            result.append((track.id, smoothed))
        self._tracks = live
        return result

    def _smoothed(self, track: _Track, face: Face, time: float) -> dict[str, float]:
        if self.half_life == 0:
            return dict(face.probabilities)
        weight = 1.0 - 0.5 ** (max(0.0, time - track.time) / self.half_life)
        return {
            name: weight * p + (1.0 - weight) * track.probabilities.get(name, p)
            for name, p in face.probabilities.items()
        }
