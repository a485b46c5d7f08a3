"""How well a model does on a user's own labelled photos: ``evaluate``'s report, the photos
where no face was found, and the most confident mistakes on a contact sheet."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferlab.common.files import write_json_atomic, write_text_atomic
from ferlab.evaluation.metrics import EvaluationReport
from ferlab.photos.faces import PhotoFaces, find_faces
from ferlab.photos.sets import PhotoSet, class_indices, load_photo_set

PHOTO_FILES = ("faces.json", "no_face.txt", "mistakes.png")
SHEET_FACES = 24  # the most confident mistakes shown


@dataclass
class PhotoEvaluation:
    """One evaluation on photos: the report, every face's prediction and the photos without one."""

    report: EvaluationReport
    photos: PhotoSet
    faces: PhotoFaces
    labels: np.ndarray  # (N,) true class index of each face found
    probabilities: np.ndarray  # (N, C)
    class_names: list[str]

    @property
    def predictions(self) -> np.ndarray:
        """(N,) predicted class index of each face found."""
        return self.probabilities.argmax(axis=1)

    @property
    def no_face(self) -> list[dict]:
        """The photos (rows of the set) where no face was found, with why."""
        return [
            {"path": str(self.photos.paths[row]), "label": self.photos.labels[row], "why": why}
            for row, why in self.faces.missing
        ]

    def mistakes(self, limit: int = SHEET_FACES) -> np.ndarray:
        """Indices of the wrongly classified faces, the most confident first (at most ``limit``)."""
        wrong = np.flatnonzero(self.predictions != self.labels)
        confidence = self.probabilities[wrong, self.predictions[wrong]]
        return wrong[np.argsort(-confidence, kind="stable")][:limit]

    def face_rows(self) -> list[dict]:
        """One JSON-ready record per face found: photo, box, label, prediction, probability."""
        rows = []
        for i, row in enumerate(self.faces.rows):
            box = self.faces.boxes[i]
            predicted = int(self.predictions[i])
            rows.append(
                {
                    "path": str(self.photos.paths[row]),
                    "box": [box.x, box.y, box.w, box.h],
                    "label": self.class_names[self.labels[i]],
                    "predicted": self.class_names[predicted],
                    "probability": round(float(self.probabilities[i, predicted]), 6),
                }
            )
        return rows

    def summary(self) -> str:
        """One line: faces found, photos without a face, accuracy."""
        return (
            f"{len(self.faces)} faces in {len(self.photos)} labelled photos "
            f"({len(self.faces.missing)} without a face found): accuracy "
            f"{100 * self.report.accuracy:.2f}%"
        )


def make_recognizer(model, *, detector: str = "blazeface", tta: str = "flip", threads: int = 1):
    """The :class:`EmotionRecognizer` that frames faces as ``predict`` does, for ``model`` (a
    path, ``"shipped"`` or a loaded classifier); ``tta`` applies to models that have views."""
    from ferlab.inference.models import load_model
    from ferlab.vision.recognizer import EmotionRecognizer

    if not hasattr(model, "predict_proba"):
        model = load_model(model, threads=threads)
    return EmotionRecognizer(
        model, detector=detector, tta=tta if hasattr(model, "tta") else None, threads=threads
    )


def evaluate_faces(
    classifier, photos: PhotoSet, faces: PhotoFaces, *, title: str | None = None
) -> PhotoEvaluation:
    """The report of ``classifier`` on faces already cut out of ``photos``."""
    from ferlab.evaluation.metrics import evaluation_report

    labels, classes = class_indices([photos.labels[r] for r in faces.rows], classifier.class_names)
    probabilities = np.asarray(classifier.predict_proba(faces.crops), dtype=np.float64)
    title = title or f"photos {photos.source} ({len(faces)} faces)"
    report = evaluation_report(
        labels, probabilities.argmax(axis=1), classes, title=title, probabilities=probabilities
    )
    return PhotoEvaluation(report, photos, faces, labels, probabilities, classes)


def evaluate_photos(
    photos: str | Path | PhotoSet,
    model="shipped",
    *,
    out_dir: str | Path | None = None,
    mapping: dict[str, str] | None = None,
    detector: str = "blazeface",
    tta: str = "flip",
    verbose: bool = True,
) -> PhotoEvaluation:
    """Evaluate ``model`` on a folder of class folders or a ``path,label[,x,y,w,h]`` CSV.

    Every photo goes through ``predict``'s detection, alignment and framing (``tta`` as
    ``predict``'s); labels are mapped by ``mapping`` and must be the model's classes. With
    ``out_dir``, writes ``evaluate``'s report.json, report.md and confusion.png, and faces.json
    (every face's prediction), no_face.txt (photos where no face was found) and mistakes.png
    (the most confident mistakes).
    """
    if not isinstance(photos, PhotoSet):
        photos = load_photo_set(photos, mapping)
    recognizer = make_recognizer(model, detector=detector, tta=tta)
    # Unknown labels are refused before any photo is searched.
    class_indices(photos.labels, recognizer.class_names)
    faces = find_faces(recognizer, photos, verbose=verbose)
    result = evaluate_faces(recognizer.model, photos, faces)
    if out_dir is not None:
        save_photo_evaluation(result, out_dir)
    if verbose:
        print(result.summary(), file=sys.stderr)
    return result


def save_photo_evaluation(result: PhotoEvaluation, out_dir: str | Path) -> list[Path]:
    """Write the report's files and faces.json, no_face.txt and mistakes.png into ``out_dir``."""
    from ferlab.evaluation.scoring import save_report
    from ferlab.photos.sheet import contact_sheet

    out_dir = Path(out_dir)
    written = save_report(result.report, out_dir)
    faces_path, missing_path, sheet_path = (out_dir / name for name in PHOTO_FILES)
    record = {
        "source": result.photos.source,
        "photos": len(result.photos),
        "faces": len(result.faces),
        "accuracy": result.report.accuracy,
        "no_face": result.no_face,
        "faces_found": result.face_rows(),
    }
    write_json_atomic(faces_path, record)
    lines = [f"{item['path']}\t{item['label']}\t{item['why']}" for item in result.no_face]
    write_text_atomic(missing_path, "".join(line + "\n" for line in lines))
    chosen = result.mistakes()
    names = result.class_names
    captions = [
        (
            f"{Path(result.photos.paths[result.faces.rows[i]]).name}",
            f"{names[result.labels[i]]}->{names[result.predictions[i]]} "
            f"{result.probabilities[i, result.predictions[i]]:.2f}",
        )
        for i in chosen
    ]
    contact_sheet(result.faces.crops[chosen], captions, sheet_path)
    return [*written, faces_path, missing_path, sheet_path]
