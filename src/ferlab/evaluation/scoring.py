"""Evaluating a classifier on images or on a data set's split, with the report's measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferlab.common.files import write_text_atomic
from ferlab.data import LabeledImages, dataset_spec, load_dataset
from ferlab.errors import ConfigError, DataError
from ferlab.evaluation.metrics import EvaluationReport, evaluation_report

# Short names accepted by ``--split`` besides the data set's own split names.
SPLIT_ALIASES = {"public": "public_test", "private": "private_test"}
REPORT_FILES = ("report.json", "report.md", "confusion.png")


def plot_confusion(report: EvaluationReport, path: str | Path) -> Path:
    """Save heat maps of the raw and the normalised confusion matrix, with class names."""
    from matplotlib.figure import Figure

    from ferlab.common.plots import save_figure

    names = report.class_names
    size = max(5.0, 0.75 * len(names) + 2.5)
    fig = Figure(figsize=(2 * size, size), constrained_layout=True)
    axes = fig.subplots(1, 2)
    panels = (
        (report.confusion_matrix, "Confusion matrix", "{:d}"),
        (report.normalized_confusion_matrix, "Normalised by class size", "{:.2f}"),
    )
    # Both panels are coloured by the fraction of the true class, so rare classes stay visible.
    normalized = report.normalized_confusion_matrix
    for ax, (matrix, title, fmt) in zip(axes, panels, strict=True):
        image = ax.imshow(normalized, cmap="Blues", vmin=0.0, vmax=1.0)
        for (i, j), value in np.ndenumerate(matrix):
            dark = normalized[i, j] > 0.5
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")  # fmt: skip
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
    fig.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true class")
    fig.suptitle(f"{report.title}: accuracy {100 * report.accuracy:.1f}%")
    return save_figure(fig, path, dpi=110)


def save_report(report: EvaluationReport, out_dir: str | Path) -> list[Path]:
    """Write report.json, report.md and confusion.png into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out_dir / name for name in REPORT_FILES)
    write_text_atomic(json_path, report.to_json())
    write_text_atomic(md_path, report.to_markdown())
    plot_confusion(report, png_path)
    return [json_path, md_path, png_path]


def check_input_shape(classifier, images: np.ndarray) -> None:
    """Refuse images whose shape differs from the one the classifier was trained on."""
    expected = getattr(classifier, "input_shape", None)
    if expected and tuple(images.shape[1:]) != tuple(expected):
        raise DataError(
            f"the images are {'x'.join(map(str, images.shape[1:]))} but the model expects "
            f"{'x'.join(map(str, expected))}; is this the data set the model was trained on?"
        )


def predict_labels(classifier, images: np.ndarray) -> np.ndarray:
    """Most likely class of each uint8 image, with the classifier's own preprocessing."""
    return np.asarray(classifier.predict_proba(images)).argmax(axis=1)


def evaluate_classifier(
    classifier,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    out_dir: str | Path | None = None,
    *,
    title: str = "Evaluation",
) -> EvaluationReport:
    """The report of ``classifier`` on uint8 images; written to ``out_dir`` when given."""
    model_names = getattr(classifier, "class_names", None)
    if model_names and len(model_names) != len(class_names):
        raise DataError(
            f"the model knows {len(model_names)} classes but the data has {len(class_names)}"
        )
    check_input_shape(classifier, images)
    probabilities = (
        np.asarray(classifier.predict_proba(images)) if len(images) else np.zeros((0, 0))
    )
    predictions = probabilities.argmax(axis=1) if len(images) else np.zeros(0, np.int64)
    report = evaluation_report(
        labels, predictions, class_names, title=title, probabilities=probabilities
    )
    if out_dir is not None:
        save_report(report, out_dir)
    return report


def model_dataset(classifier) -> str | None:
    """The data set a model was trained on, from its recorded training settings."""
    info = getattr(classifier, "training_info", None) or {}
    return (info.get("data") or {}).get("dataset")


def resolve_split(dataset: str, split: str) -> str:
    """The data set's own name for ``split`` (``public`` -> ``public_test``, ``train``, ``val``)."""
    spec = dataset_spec(dataset)
    known = (spec.train_split, *spec.test_splits)
    name = SPLIT_ALIASES.get(split, split)
    if name in ("train", "training"):
        name = spec.train_split
    if name == "val" or name in known:
        return name
    choices = ", ".join(["val", *known, *(a for a, full in SPLIT_ALIASES.items() if full in known)])
    raise ConfigError(f"dataset {dataset!r} has no split {split!r}; choose one of: {choices}")


def split_of(classifier, data: LabeledImages, dataset: str, split: str) -> LabeledImages:
    """The samples of one split, as the model saw them when it records its training data settings.

    ``val`` rebuilds the validation part held out of training; classes excluded from training are
    dropped from every split and the rest renumbered as in training.
    """
    from ferlab.data.split import recorded_splits

    rebuilt = recorded_splits(data, getattr(classifier, "training_info", None), dataset=dataset)
    if not rebuilt.recorded:
        if split == "val":
            raise ConfigError(
                "this model file does not record how its validation split was made; "
                "evaluate a test split instead"
            )
        return data.split(split)
    if split == "val" and rebuilt.data_config.get("refit"):
        raise ConfigError(
            "this model also trained on its validation part (data.refit); "
            "evaluate a test split instead"
        )
    splits = rebuilt.splits
    if split == "val":
        return splits.val
    if split == dataset_spec(dataset).train_split:
        return splits.train
    return splits.tests.get(split, data.subset(np.zeros(len(data), dtype=bool)))


def evaluate_split(
    classifier,
    data_path: str | Path | None,
    split: str,
    *,
    dataset: str | None = None,
    out_dir: str | Path | None = None,
    strict: bool = False,
    use_cache: bool = True,
) -> EvaluationReport:
    """Evaluate on a split (``public``, ``private``, ``test``, ``val``) of the model's data set."""
    dataset = dataset or model_dataset(classifier)
    if dataset is None:
        raise ConfigError("the model does not record its data set; say which with --dataset")
    name = resolve_split(dataset, split)
    data = load_dataset(dataset, data_path, strict=strict, use_cache=use_cache)
    part = split_of(classifier, data, dataset, name)
    if len(part) == 0:
        raise DataError(f"the data at {data_path or dataset} has no {name!r} samples")
    title = f"{dataset} {name} ({len(part)} samples)"
    return evaluate_classifier(
        classifier, part.images, part.labels, part.class_names, out_dir, title=title
    )
