"""MediaPipe's BlazeFace CNN face detectors, run with ONNX Runtime.

The networks are MediaPipe's ``face_detection_back.tflite`` (256x256 input, trained on
rear-camera photos with faces of many sizes) and ``face_detection_full_range.tflite`` (192x192),
both Apache-2.0, converted once to ONNX by ``release/convert_blazeface.py`` and shipped in
``ferlab/assets`` (see ``THIRD_PARTY_NOTICES.md``). Each gives, for every anchor of its square
input, a face score, a box and six landmarks.

A photo is searched in two passes. The candidate pass runs the back network on the whole photo,
letterboxed into its square, and on overlapping tiles when faces as small as ``min_face`` pixels
would be too small at the whole photo's scale; its detections above a low score are merged by
MediaPipe's weighted non-maximum suppression (overlapping boxes averaged, weighted by score).
The verification pass looks again at each candidate in a square :data:`CONTEXT` times its side,
centred on it and turned so that its eyes are level, with both networks. A face's score comes
from the probability given by :data:`VERIFIER`, a quadratic logistic model of four
measurements: the candidate's score, each network's score there (0 for a network that finds
nothing overlapping it) and how far apart the two networks put the eyes, nose and mouth. It was
fitted by ``benchmarks/detector_verifier.py`` on FER2013 Training faces pasted on photos that
are in neither the pipeline benchmark nor the real-photo set. One network alone takes textures,
animals and painted shapes for faces; the other, trained on other photos, rarely agrees with it
on them, neither in score nor in where the eyes are, but it also doubts tightly cropped real
faces that the first is sure of: the model weighs the measurements together instead of
averaging the two scores, which dropped faces that only one network was sure of. A face that
only one network finds must be surer to count than one both agree on (:func:`face_score`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ferlab.errors import FerlabError
from ferlab.vision.detection import Detection
from ferlab.vision.framing import Framing
from ferlab.vision.ssd import Network, anchor_centres, box_iou, decode, weighted_nms

NETWORKS = {
    "back": Network("blazeface_back.onnx", 256, (16, 32, 32, 32), True),
    "full_range": Network("blazeface_full_range.onnx", 192, (4,), False),
}
NETWORK = "back"  # the candidate pass's network
FRAME_SCALE = 1.19
FRAME_SHIFT = (0.0, -0.108)
# Smallest face side, as a fraction of the searched square, that the network finds reliably:
# measured on FER2013 Training faces pasted on photos (benchmarks/detector_scenes.py --sizes).
SMALLEST_FACE = 0.07
# The candidate pass keeps detections down to this score; verification decides (see above).
CANDIDATE_SCORE = 0.4
# The verification view's side, in candidate box sides: enough of the head, hair and shoulders
# for both networks to judge the face as they were trained to (1.5 to 4 measured, on Training
# faces pasted on photos).
CONTEXT = 2.5
VERIFY_IOU = 0.3  # a verifying detection must overlap the candidate by this much
# The verification's face model (see the module's docstring): the face probability is
# sigmoid(bias + linear . x + x . quadratic . x) of x = (candidate score, back network's score,
# full-range network's score, landmark disagreement). The face's size is left out on purpose:
# how often faces of each size are found in the scenes it was fitted on says more about those
# scenes than about photos (small pasted FER2013 crops are hard; small faces in group photos
# are not).
# Written by benchmarks/detector_verifier.py (record benchmarks/results/detector_verifier.json).
VERIFIER = {
    "bias": -5.239265,
    "linear": (9.278818, 1.366191, 0.850364, -4.868766),
    "quadratic": (
        (0.0, 0.632697, 0.0, 0.0),
        (0.632697, 0.0, 0.177071, 0.0),
        (0.0, 0.177071, 0.0, 0.0),
        (0.0, 0.0, 0.0, 0.0),
    ),
}
# Landmark disagreement: the mean distance between the networks' eyes, nose and mouth in the
# verification view, in units of this fraction of the view (half the expected face side), at
# most 1 (also when a network finds nothing).
LANDMARK_UNIT = 0.2
# A face the two networks agree on (the mean of their scores at least AGREE, the rule this
# verifier replaced) scores the verifier's probability; a face only one of them finds (FER2013's
# tightly cropped faces, but also animals, textures and drawings) needs the verifier surer:
# its probability p is mapped so that p = DISPUTED scores 0.5, p = 1 scores 1 (see
# :func:`face_score`). DISPUTED: keep a face when p * (cost of a miss) > (1 - p) * (cost of a
# false face), a false face costing 10 missed faces (issue 44's targets: 5% of about 2 faces
# per scene missed against 1 false face per 100 scenes), p > 10 / 11, rounded down.
AGREE = 0.5
DISPUTED = 0.9
# The default min_score: the verifier's probability at least 0.5 for a face both networks agree
# on, at least DISPUTED for the others (chosen on the held-out validation scenes of
# detector_verifier.json: more faces found and fewer false faces than the previous rule, the
# mean of both networks' scores >= 0.5, on each of its four parts).
MIN_SCORE = 0.5
# The candidate pass's own score threshold when verification is off (verify=False).
UNVERIFIED_MIN_SCORE = 0.5
VERIFY_BATCH = 32  # views per ONNX Runtime call, bounding memory on crowded photos
# A detection with this much of its area inside a larger face is not a face of its own.
NESTED = 0.6
# A tile's detection this close (fraction of the tile side) to an edge the tile shares with the
# rest of the photo may be a cut face; the neighbouring tile or the coarser view sees it whole.
EDGE_MARGIN = 0.03
# Each level of tiles is at most this many times smaller than the view above it: the network
# finds faces from SMALLEST_FACE to about half of its square, so a face too small for one view
# is well inside the range of the next.
LEVEL_RATIO = 6.0


@dataclass(frozen=True)
class Window:
    """A square view of the photo: its top-left corner and side in the photo's pixels, and which
    of its edges (left, top, right, bottom) lie inside the photo rather than on its border."""

    x: int
    y: int
    side: int
    inner_edges: tuple[bool, bool, bool, bool] = (False, False, False, False)


def search_windows(width: int, height: int, *, min_face: int) -> list[Window]:
    """The views that find every face of at least ``min_face`` pixels in a ``width`` x
    ``height`` photo: the whole photo, then as few levels of overlapping tiles as keep each
    level's tiles at most :data:`LEVEL_RATIO` times smaller than the last, down to tiles in which a ``min_face``
    face is just found."""
    longest = max(width, height)
    windows = [Window(0, 0, longest)]
    smallest_tile = min_face / SMALLEST_FACE
    if longest <= smallest_tile:
        return windows
    levels = math.ceil(math.log(longest / smallest_tile, LEVEL_RATIO) - 1e-9)
    ratio = (longest / smallest_tile) ** (1 / levels)
    side = float(longest)
    for _ in range(levels):
        # Tiles overlap by the largest face this level must see whole: the coarser view's smallest.
        overlap = math.ceil(side * SMALLEST_FACE)
        side /= ratio
        tile = math.ceil(side)
        windows += _tiles(width, height, tile, min(overlap, tile // 2))
    return windows


def _tiles(width: int, height: int, side: int, overlap: int) -> list[Window]:
    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        count = math.ceil((length - overlap) / (side - overlap))
        return [round(i * (length - side) / (count - 1)) for i in range(count)]

    tiles = []
    for y in starts(height):
        for x in starts(width):
            inner = (x > 0, y > 0, x + side < width, y + side < height)
            tiles.append(Window(x, y, side, inner))
    return tiles


class BlazeFaceDetector:
    """MediaPipe's BlazeFace face detectors on ONNX Runtime, verified by a second look.

    ``min_score`` is the smallest verified face score kept (:func:`face_score`, in [0, 1];
    None: :data:`MIN_SCORE`, or :data:`UNVERIFIED_MIN_SCORE` without verification);
    ``min_face`` the smallest face side searched, in pixels of the
    photo; ``threads`` the ONNX Runtime threads. ``verify=False`` keeps the candidate pass alone
    (its score, ``network``'s own), for comparison. ``detect(rgb)`` gives boxes, scores and the
    six landmarks (:data:`~ferlab.vision.detect.LANDMARKS`) together.
    """

    name = "blazeface"
    # FER2013's crop around this detector's box, measured on Training faces pasted on photos
    # (benchmarks/pipeline_accuracy.py --calibrate 1000, record "calibration_blazeface": medians).
    framing = Framing(scale=FRAME_SCALE, shift=FRAME_SHIFT)

    def __init__(
        self,
        *,
        min_score: float | None = None,
        min_face: int = 30,
        threads: int = 1,
        network: str = NETWORK,
        verify: bool = True,
    ) -> None:
        if min_score is None:
            min_score = MIN_SCORE if verify else UNVERIFIED_MIN_SCORE
        if not isinstance(min_score, int | float) or not 0.0 < min_score < 1.0:
            raise FerlabError(f"min_score must be a number in (0, 1), got {min_score!r}")
        if not isinstance(min_face, int) or isinstance(min_face, bool) or min_face < 8:
            raise FerlabError(f"min_face must be a whole number of pixels >= 8, got {min_face!r}")
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise FerlabError(f"threads must be an integer >= 1, got {threads!r}")
        if network not in NETWORKS:
            choices = ", ".join(sorted(NETWORKS))
            raise FerlabError(f"unknown BlazeFace network {network!r}; choose one of {choices}")
        self.min_score, self.min_face, self.verify = float(min_score), min_face, bool(verify)
        self.network = NETWORKS[network]
        self._runners = {name: _Runner(net, threads) for name, net in NETWORKS.items()}
        digest = hashlib.sha256(
            ("".join(r.sha256 for r in self._runners.values()) + repr(VERIFIER)).encode()
        ).hexdigest()
        self.version = (
            f"{network.replace('_', '-')}+verify-{digest[:12]}"
            if self.verify
            else f"{network.replace('_', '-')}-{self._runners[network].sha256[:12]}"
        )

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in a uint8 RGB image (H, W, 3), largest first."""
        height, width = rgb.shape[:2]
        if min(height, width) < 8:
            return []
        first = self.min_score if not self.verify else min(self.min_score, CANDIDATE_SCORE)
        candidates = self._candidates(rgb, first)
        if self.verify and candidates:
            candidates = self._verified(rgb, candidates)
        candidates = _without_nested([c for c in candidates if c[2] >= self.min_score])
        faces = [_detection(box, points, score, width, height) for box, points, score in candidates]
        faces = [f for f in faces if f.w >= 4 and f.h >= 4]
        return sorted(faces, key=lambda d: d.w * d.h, reverse=True)

    def _candidates(self, rgb: np.ndarray, min_score: float):
        """The candidate pass: merged (box (4,), landmarks (6, 2), score) in photo pixels."""
        height, width = rgb.shape[:2]
        runner = self._runners[_name_of(self.network)]
        windows = search_windows(width, height, min_face=self.min_face)
        side = runner.network.side
        boxes, landmarks, scores = runner.run([_view(rgb, w, side) for w in windows])
        found_boxes, found_points, found_scores = [], [], []
        for window, b, p, s in zip(windows, boxes, landmarks, scores, strict=True):
            keep = (s >= min_score) & ~_touches_inner_edge(b, window)
            found_boxes.append(b[keep] * window.side + (window.x, window.y, window.x, window.y))
            found_points.append(p[keep] * window.side + (window.x, window.y))
            found_scores.append(s[keep])
        return weighted_nms(
            np.concatenate(found_boxes), np.concatenate(found_points), np.concatenate(found_scores)
        )

    def _verified(self, rgb: np.ndarray, candidates):
        """The verification pass: each candidate's score becomes its face score
        (:func:`face_score`), and its landmarks those the candidate network finds in its
        upright view (a turned face's landmarks are surer once it is upright)."""
        measured, refined = self.measurements(rgb, candidates)
        return [
            (box, points, float(score))
            for (box, _, _), points, score in zip(
                candidates, refined, face_score(measured), strict=True
            )
        ]

    def measurements(self, rgb: np.ndarray, candidates):
        """The verifier's measurements (N, 4) of the N candidates (box, landmarks, score), and
        their landmarks (6, 2) in the photo as the candidate network finds them in each
        candidate's view :data:`CONTEXT` times its side, turned so that its eyes are level."""
        frames = [_context_frame(box, points) for box, points, _ in candidates]
        # In its own view each candidate is upright, centred, 1 / CONTEXT of the side.
        half = 0.5 / CONTEXT
        expected = np.array([0.5 - half, 0.5 - half, 0.5 + half, 0.5 + half])
        scores = {name: np.zeros(len(candidates)) for name in self._runners}
        points = {name: [None] * len(candidates) for name in self._runners}
        refined = [p for _, p, _ in candidates]
        for name, runner in self._runners.items():
            side = runner.network.side
            views = [_turned_view(rgb, frame, side) for frame in frames]
            found, landmarks, found_scores = runner.run(views)
            for i, frame in enumerate(frames):
                near = np.flatnonzero(box_iou(expected, found[i]) >= VERIFY_IOU)
                if not len(near):
                    continue
                best = near[np.argmax(found_scores[i][near])]
                scores[name][i] = float(found_scores[i][best])
                points[name][i] = landmarks[i][best]
                if runner.network == self.network:
                    refined[i] = _to_photo(landmarks[i][best], frame)
        apart = np.ones(len(candidates))
        for i, (back, full) in enumerate(zip(points["back"], points["full_range"], strict=True)):
            if back is not None and full is not None:
                distance = np.linalg.norm(back[:4] - full[:4], axis=1).mean() / LANDMARK_UNIT
                apart[i] = min(1.0, float(distance))
        measured = np.stack(
            [
                np.array([s for _, _, s in candidates], float),
                scores["back"],
                scores["full_range"],
                apart,
            ],
            axis=1,
        )
        return measured, refined


def face_score(measured: np.ndarray, model: dict | None = None) -> np.ndarray:
    """The face score (N,) in [0, 1] of measurements (N, 4): the verifier's probability p for a
    face both networks agree on (the mean of their scores, columns 1 and 2, at least
    :data:`AGREE`); for the others p mapped piecewise linearly, 0 -> 0, :data:`DISPUTED` -> 0.5,
    1 -> 1, so that a face only one network finds scores 0.5 when the verifier is
    :data:`DISPUTED` sure of it."""
    probability = face_probability(measured, model)
    agree = np.asarray(measured, float).reshape(-1, 4)[:, 1:3].mean(axis=1) >= AGREE
    disputed = np.where(
        probability < DISPUTED,
        0.5 * probability / DISPUTED,
        0.5 + 0.5 * (probability - DISPUTED) / (1.0 - DISPUTED),
    )
    return np.where(agree, probability, disputed)


def face_probability(measured: np.ndarray, model: dict | None = None) -> np.ndarray:
    """The verifier's face probability (N,) of measurements (N, 4) (see :data:`VERIFIER`)."""
    model = VERIFIER if model is None else model
    x = np.asarray(measured, float).reshape(-1, 4)
    quadratic = np.asarray(model["quadratic"], float)
    logit = model["bias"] + x @ np.asarray(model["linear"], float)
    logit = logit + np.einsum("ni,ij,nj->n", x, quadratic, x)
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -60.0, 60.0)))


def _name_of(network: Network) -> str:
    return next(name for name, net in NETWORKS.items() if net == network)


@dataclass(frozen=True)
class _Frame:
    """A turned square view of the photo: its centre (x, y), side in photo pixels, and the
    angle in radians by which the photo is turned in it (the face's roll)."""

    x: float
    y: float
    side: float
    angle: float


def _context_frame(box: np.ndarray, points: np.ndarray) -> _Frame:
    """The verification view of a candidate: :data:`CONTEXT` times its box's (4,) longer side,
    centred on the box, turned by the roll of its eyes (landmarks (6, 2))."""
    side = max(8.0, CONTEXT * float(max(box[2] - box[0], box[3] - box[1])))
    (rx, ry), (lx, ly) = points[0], points[1]
    return _Frame(
        float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2, side, math.atan2(ly - ry, lx - rx)
    )


def _view_to_photo(frame: _Frame, side: int) -> np.ndarray:
    """The 2x3 affine matrix from a ``side``-pixel view of ``frame`` to the photo's pixels."""
    scale = frame.side / side
    cos, sin = math.cos(frame.angle) * scale, math.sin(frame.angle) * scale
    centre = side / 2
    return np.array(
        [
            [cos, -sin, frame.x - cos * centre + sin * centre],
            [sin, cos, frame.y - sin * centre - cos * centre],
        ]
    )


def _turned_view(rgb: np.ndarray, frame: _Frame, side: int) -> np.ndarray:
    """The network's input (3, side, side), float32 in [-1, 1], of a turned view (black
    beyond the photo)."""
    import cv2

    matrix = _view_to_photo(frame, side)
    source = rgb
    shrink = frame.side / side
    if shrink > 1.5:  # area-average first so the view does not alias
        # Only the part of the photo the view covers (with a margin for the interpolation):
        # shrinking the whole photo for each view cost more than the networks on large photos.
        corners = np.array([[0, 0, 1], [side, 0, 1], [0, side, 1], [side, side, 1]]) @ matrix.T
        margin = 2 * shrink + 2
        height, width = rgb.shape[:2]
        x0, y0 = (max(0, math.floor(v - margin)) for v in corners.min(axis=0))
        x1 = min(width, math.ceil(corners[:, 0].max() + margin))
        y1 = min(height, math.ceil(corners[:, 1].max() + margin))
        if x1 - x0 < 1 or y1 - y0 < 1:
            return np.full((3, side, side), -1.0, np.float32)  # the view is all beyond the photo
        source = rgb[y0:y1, x0:x1]
        matrix = matrix - np.array([[0, 0, x0], [0, 0, y0]])
        scale = 1.0 / shrink
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        matrix = matrix * np.array([[size[0] / (x1 - x0)], [size[1] / (y1 - y0)]])
        source = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
    square = cv2.warpAffine(
        source,
        matrix,
        (side, side),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )
    return (square.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def _to_photo(points: np.ndarray, frame: _Frame) -> np.ndarray:
    """Points (M, 2) as fractions of a frame's view, in the photo's pixels."""
    matrix = _view_to_photo(frame, 1)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _without_nested(candidates, inside: float = NESTED):
    """``candidates`` (box, landmarks, score) less those whose box lies mostly (``inside`` of
    its area) within a larger kept box: a face is never inside another face, but the eyes and
    nose of a tightly cropped face can pass for a small one."""
    kept = []
    for box, points, score in sorted(candidates, key=lambda c: -_area(c[0])):
        within = any(_intersection(box, other) >= inside * _area(box) for other, _, _ in kept)
        if not within:
            kept.append((box, points, score))
    return kept


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return float(ix * iy)


class _Runner:
    """One BlazeFace network's ONNX Runtime session and anchors."""

    def __init__(self, network: Network, threads: int) -> None:
        self.network = network
        self._session, self.sha256 = _load_session(network.file, threads)
        self._anchors = anchor_centres(network)

    def run(self, views: list[np.ndarray]):
        """Boxes (N, K, 4), landmarks (N, K, 6, 2) and scores (N, K), as fractions of each of
        the N views (3, side, side) given."""
        # One view per call: on one thread that is the fastest (a batch's activations do not
        # stay in cache), and memory stays bounded on crowded photos.
        outputs = [
            self._session.run(["regressors", "classificators"], {"image": view[None]})
            for view in views
        ]
        raw = np.concatenate([r for r, _ in outputs])
        logits = np.concatenate([c for _, c in outputs])
        return decode(raw, logits, self._anchors, self.network.side)


def _touches_inner_edge(boxes: np.ndarray, window: Window) -> np.ndarray:
    """Which boxes (K, 4; fractions of the window) reach an edge shared with the rest of the photo."""
    left, top, right, bottom = window.inner_edges
    near = np.zeros(len(boxes), bool)
    if left:
        near |= boxes[:, 0] < EDGE_MARGIN
    if top:
        near |= boxes[:, 1] < EDGE_MARGIN
    if right:
        near |= boxes[:, 2] > 1 - EDGE_MARGIN
    if bottom:
        near |= boxes[:, 3] > 1 - EDGE_MARGIN
    return near


def _view(rgb: np.ndarray, window: Window, side: int) -> np.ndarray:
    """The network's input (3, side, side), float32 in [-1, 1]: the window's part of the photo
    resized to the network's square, black where the window reaches beyond the photo."""
    import cv2

    height, width = rgb.shape[:2]
    square = np.zeros((side, side, 3), np.uint8)
    x0, y0 = max(window.x, 0), max(window.y, 0)
    x1, y1 = min(window.x + window.side, width), min(window.y + window.side, height)
    if x1 > x0 and y1 > y0:
        scale = side / window.side
        left, top = round((x0 - window.x) * scale), round((y0 - window.y) * scale)
        size = (
            max(1, min(side - left, round((x1 - x0) * scale))),
            max(1, min(side - top, round((y1 - y0) * scale))),
        )
        shrink = scale < 1.0
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        resized = cv2.resize(rgb[y0:y1, x0:x1], size, interpolation=interpolation)
        square[top : top + size[1], left : left + size[0]] = resized
    return (square.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def _detection(box, points, score: float, width: int, height: int) -> Detection:
    x0, y0 = max(0.0, float(box[0])), max(0.0, float(box[1]))
    x1, y1 = min(float(width), float(box[2])), min(float(height), float(box[3]))
    marks = tuple((round(float(x), 1), round(float(y), 1)) for x, y in points)
    return Detection(round(x0), round(y0), round(x1 - x0), round(y1 - y0), round(score, 4), marks)


def _load_session(file: str, threads: int):
    try:
        import onnxruntime
    except ImportError:
        raise FerlabError(
            "the blazeface detector needs onnxruntime: pip install onnxruntime"
        ) from None
    from ferlab.assets import asset_path

    data = asset_path(file).read_bytes()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session, hashlib.sha256(data).hexdigest()
