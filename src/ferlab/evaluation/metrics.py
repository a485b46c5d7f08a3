"""The report's measures: confusion matrices and per-class recall, precision, F1 and rates.

Every measure is computed twice, as the original report did: on the raw confusion matrix and on the
matrix normalised by class size (each row divided by its class count). A class that is never
predicted, or absent from the evaluated set, gives 0 with a note, never NaN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ferlab.evaluation.calibration import expected_calibration_error

MEASURES = ("recall", "precision", "f1", "classification_rate", "report_classification_rate")
MEASURE_TITLES = {
    "recall": "Recall",
    "precision": "Precision",
    "f1": "F1",
    "classification_rate": "Classification rate",
    "report_classification_rate": "Report's CR",
}


def percent(fraction: float, digits: int = 2) -> str:
    """A fraction as ferlab prints every accuracy and error rate: ``0.3825`` -> ``38.25%``."""
    return f"{100 * fraction:.{digits}f}%"


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts with rows for the true class and columns for the predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} true labels but {y_pred.size} predictions")
    for name, y in (("true", y_true), ("predicted", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name} labels outside 0..{num_classes - 1}")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the class size); an empty row stays 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    sizes = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sizes, out=np.zeros_like(matrix), where=sizes > 0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def class_measures(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class recall, precision, F1, (TP+TN)/N and the report's trace/(trace+FP+FN)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    actual = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    total = matrix.sum()
    fn = actual - tp
    fp = predicted - tp
    tn = total - actual - predicted + tp
    recall = _ratio(tp, actual)
    precision = _ratio(tp, predicted)
    trace = tp.sum()
    return {
        "recall": recall,
        "precision": precision,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "classification_rate": _ratio(tp + tn, np.full_like(tp, total)),
        "report_classification_rate": _ratio(np.full_like(tp, trace), trace + fp + fn),
    }


@dataclass
class MatrixMeasures:
    """The measures of one matrix (raw or normalised), per class and averaged over classes."""

    per_class: dict[str, np.ndarray]
    average: dict[str, float]

    @classmethod
    def of(cls, matrix: np.ndarray) -> MatrixMeasures:
        per_class = class_measures(matrix)
        return cls(per_class, {name: float(values.mean()) for name, values in per_class.items()})

    def to_dict(self, class_names: list[str]) -> dict:
        return {
            "per_class": {
                name: {c: float(v) for c, v in zip(class_names, values, strict=True)}
                for name, values in self.per_class.items()
            },
            "average": dict(self.average),
        }


@dataclass
class EvaluationReport:
    """Confusion matrices, per-class measures, accuracy and class distribution of one evaluation."""

    class_names: list[str]
    confusion_matrix: np.ndarray
    normalized_confusion_matrix: np.ndarray
    raw: MatrixMeasures
    normalized: MatrixMeasures
    notes: list[str] = field(default_factory=list)
    title: str = "Evaluation"
    # Expected calibration error of the top probabilities (15 bins), when they were given.
    calibration_error: float | None = None

    @property
    def n(self) -> int:
        return int(self.confusion_matrix.sum())

    @property
    def class_counts(self) -> np.ndarray:
        return self.confusion_matrix.sum(axis=1)

    @property
    def predicted_counts(self) -> np.ndarray:
        return self.confusion_matrix.sum(axis=0)

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion_matrix) / self.n) if self.n else 0.0

    @property
    def error_rate(self) -> float:
        return 1.0 - self.accuracy if self.n else 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict of every figure."""
        return {
            "title": self.title,
            "class_names": list(self.class_names),
            "n": self.n,
            "accuracy": self.accuracy,
            "error_rate": self.error_rate,
            "class_counts": {
                c: int(v) for c, v in zip(self.class_names, self.class_counts, strict=True)
            },
            "predicted_counts": {
                c: int(v) for c, v in zip(self.class_names, self.predicted_counts, strict=True)
            },
            "confusion_matrix": self.confusion_matrix.astype(int).tolist(),
            "normalized_confusion_matrix": self.normalized_confusion_matrix.tolist(),
            "measures": self.raw.to_dict(self.class_names),
            "normalized_measures": self.normalized.to_dict(self.class_names),
            "notes": list(self.notes),
            "calibration_error": self.calibration_error,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def _matrix_rows(self, matrix: np.ndarray, fmt: str) -> list[list[str]]:
        header = ["true \\ predicted", *self.class_names]
        rows = [
            [name, *(fmt.format(v) for v in row)]
            for name, row in zip(self.class_names, matrix, strict=True)
        ]
        return [header, *rows]

    def _measure_rows(self, measures: MatrixMeasures) -> list[list[str]]:
        header = ["measure (%)", *self.class_names, "average"]
        rows = [
            [
                MEASURE_TITLES[name],
                *(f"{100 * v:.1f}" for v in measures.per_class[name]),
                f"{100 * measures.average[name]:.1f}",
            ]
            for name in MEASURES
        ]
        return [header, *rows]

    def _summary_lines(self) -> list[str]:
        dist = ", ".join(
            f"{c} {int(v)}" for c, v in zip(self.class_names, self.class_counts, strict=True)
        )
        lines = [
            f"Samples: {self.n}",
            f"Accuracy (correct classifications): {100 * self.accuracy:.2f}%",
            f"Error rate: {100 * self.error_rate:.2f}%",
        ]
        if self.calibration_error is not None:
            lines.append(
                f"Expected calibration error (top probability, 15 bins): "
                f"{100 * self.calibration_error:.2f}%"
            )
        return [*lines, f"Class distribution: {dist}"]

    def _sections(self) -> list[tuple[str, list[list[str]]]]:
        return [
            ("Confusion matrix (rows: true class, columns: predicted)",
             self._matrix_rows(self.confusion_matrix, "{:d}")),
            ("Measures of the confusion matrix", self._measure_rows(self.raw)),
            ("Confusion matrix normalised by class size",
             self._matrix_rows(self.normalized_confusion_matrix, "{:.2f}")),
            ("Measures of the normalised matrix", self._measure_rows(self.normalized)),
        ]  # fmt: skip

    def _explanations(self) -> list[str]:
        return [
            "Classification rate is (TP + TN) / N, one class against the rest; "
            "the report's CR is trace / (trace + FP + FN), the original report's variant.",
            *self.notes,
        ]

    def to_markdown(self) -> str:
        """The report as Markdown tables."""
        lines = [f"# {self.title}", ""]
        lines += [f"- {line}" for line in self._summary_lines()]
        for heading, table in self._sections():
            lines += ["", f"## {heading}", ""]
            lines.append("| " + " | ".join(table[0]) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * (len(table[0]) - 1)) + "|")
            lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in self._explanations()]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """The report as aligned plain-text tables for a terminal."""
        lines = [self.title, "=" * len(self.title), *self._summary_lines()]
        for heading, table in self._sections():
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            lines += ["", heading]
            for row in table:
                cells = [row[0].ljust(widths[0])] + [
                    cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
                ]
                lines.append("  ".join(cells))
        lines += ["", "Notes:"] + [f"- {note}" for note in self._explanations()]
        return "\n".join(lines) + "\n"


def _notes(matrix: np.ndarray, class_names: list[str]) -> list[str]:
    notes = []
    absent = [c for c, v in zip(class_names, matrix.sum(axis=1), strict=True) if v == 0]
    never = [c for c, v in zip(class_names, matrix.sum(axis=0), strict=True) if v == 0]
    if absent:
        notes.append(
            f"absent from the evaluated set: {', '.join(absent)} (recall and normalised row are 0)"
        )
    if never:
        notes.append(f"never predicted: {', '.join(never)} (precision set to 0)")
    return notes


def evaluation_report(
    y_true,
    y_pred,
    class_names: list[str],
    *,
    title: str = "Evaluation",
    probabilities: np.ndarray | None = None,
) -> EvaluationReport:
    """The full report for true labels and predictions over ``class_names``; with the (N, C)
    ``probabilities`` behind the predictions, their expected calibration error too."""

    class_names = [str(c) for c in class_names]
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    normalized = normalize_rows(matrix)
    return EvaluationReport(
        class_names,
        matrix,
        normalized,
        MatrixMeasures.of(matrix),
        MatrixMeasures.of(normalized),
        _notes(matrix, class_names),
        title,
        None
        if probabilities is None or not len(probabilities)
        else expected_calibration_error(probabilities, y_true),
    )
