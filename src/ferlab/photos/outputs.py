"""What ``ferlab adapt`` writes: the adapted model in its parent's kind, the run's record with
every face's prediction by the written file, and the model card naming parent and data."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from ferlab.common.files import write_json_atomic, write_text_atomic

MODEL_FILES = {"onnx": "model.onnx", "cnn": "model.safetensors"}
MIN_INT8_AGREEMENT = 0.95  # of the user's faces, else the float ONNX file is written
ADAPT_FILES = ("adapt.json", "model_card.json", "MODEL_CARD.md", "no_face.txt")
CARD_KEYS = (
    "parent", "data", "class_counts", "new_classes", "choice", "folds", "tests", "verdict",
    "model_sha256", "quantized", "tta", "detector",
)  # fmt: skip


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_adapted(
    network, parent_kind: str, out_dir: Path, calibration: np.ndarray, *, quantized: bool
) -> Path:
    """Write the adapted network as the parent's kind: ONNX (int8 when the parent was, its
    activation ranges set on the user's faces (N, 48, 48)) or a CNN ``.safetensors`` file.

    The paired test measured the float network, so an int8 file that agrees with it on fewer
    than ``MIN_INT8_AGREEMENT`` of the user's faces (top class, both views) is not written: the
    float ONNX file is, and :func:`is_quantized` tells which one was."""
    from ferlab.deep.export import export_onnx

    target = out_dir / MODEL_FILES[parent_kind]
    if parent_kind == "cnn":
        network.save(target)
        return target
    if not quantized:
        export_onnx(network, target, name=network.meta.get("name") or "adapted")
        return target
    from ferlab.inference.onnx_model import quantize_onnx

    with tempfile.TemporaryDirectory(prefix="ferlab-adapt-") as folder:
        float_path = Path(folder) / "float.onnx"
        export_onnx(network, float_path, name="adapted")
        quantize_onnx(float_path, target, calibration)
        if int8_agreement(network, target, calibration) < MIN_INT8_AGREEMENT:
            export_onnx(network, target, name=network.meta.get("name") or "adapted")
    return target


def int8_agreement(network, path: Path, faces: np.ndarray) -> float:
    """How often the ONNX file at ``path`` and ``network`` give the same top class, with the
    flip views, on ``faces`` (N, 48, 48)."""
    from ferlab.inference.models import load_model

    written = load_model(path)
    saved, written.tta, network.tta = network.tta, "flip", "flip"
    try:
        mine = np.asarray(written.predict_proba(faces)).argmax(axis=1)
        theirs = np.asarray(network.predict_proba(faces)).argmax(axis=1)
    finally:
        network.tta = saved
    return float((mine == theirs).mean())


def is_quantized(path: Path) -> bool:
    """Whether the model file at ``path`` is an int8 ONNX file."""
    from ferlab.inference.models import load_model

    return Path(path).suffix == ".onnx" and bool(load_model(path).meta.get("quantization"))


def parent_facts(parent, parent_path: Path, kind: str) -> dict:
    """The parent model as the record names it: path, kind, sha256, name."""
    return {
        "path": str(parent_path),
        "kind": kind,
        "sha256": sha256_of(parent_path),
        "name": getattr(parent, "meta", {}).get("name"),
    }


def data_facts(photos, faces, labels: np.ndarray) -> dict:
    """The photos as the record names them: source, counts and a fingerprint."""
    return {
        "source": photos.source,
        "photos": len(photos),
        "faces": len(labels),
        "no_face": len(faces.missing),
        "fingerprint": photos.fingerprint(),
    }


def file_record(target: Path, network, faces, labels, class_names, photos, *, tta: str) -> dict:
    """The written file's identity, its agreement with the float network and its prediction
    for every face (the round trip a user can check with ``ferlab.load_model``)."""
    from ferlab.inference.models import load_model

    written = load_model(target)
    if hasattr(written, "tta"):
        written.tta = tta
    probabilities = np.asarray(written.predict_proba(faces.crops))
    predictions = probabilities.argmax(axis=1)
    agreement = 1.0
    if hasattr(network, "predict_proba"):
        agreement = float((predictions == network.predict_proba(faces.crops).argmax(axis=1)).mean())
    return {
        "model_file": str(target),
        "model_sha256": sha256_of(target),
        "file_agreement": agreement,
        "training_accuracy": float((predictions == labels).mean()),
        "predictions": [
            {
                "path": str(photos.paths[row]),
                "box": [b.x, b.y, b.w, b.h],
                "label": class_names[labels[i]],
                "predicted": written.class_names[int(predictions[i])],
                "probability": round(float(probabilities[i, predictions[i]]), 6),
            }
            for i, (row, b) in enumerate(zip(faces.rows, faces.boxes, strict=True))
        ],
    }


def write_outputs(out_dir: Path, record: dict, photos, faces) -> None:
    """``adapt.json``, ``model_card.json``, ``MODEL_CARD.md`` and ``no_face.txt``."""
    write_json_atomic(out_dir / "adapt.json", record)
    card = {key: record[key] for key in CARD_KEYS} | {"file": Path(record["model_file"]).name}
    write_json_atomic(out_dir / "model_card.json", card)
    write_text_atomic(out_dir / "MODEL_CARD.md", model_card(record))
    lines = [f"{photos.paths[r]}\t{photos.labels[r]}\t{why}\n" for r, why in faces.missing]
    write_text_atomic(out_dir / "no_face.txt", "".join(lines))


def model_card(record: dict) -> str:
    """The adapted model's card as Markdown, from the run's record."""
    parent, data = record["parent"], record["data"]
    tests = record["tests"]
    counts = ", ".join(f"{n} {c}" for n, c in record["class_counts"].items() if c)
    lines = [
        f"# Adapted model: {Path(record['model_file']).name}",
        "",
        f"- Parent model: `{parent['path']}` ({parent['kind']}, sha256 `{parent['sha256'][:16]}...`"
        + (f", {parent['name']}" if parent.get("name") else "")
        + ")",
        f"- Data: {data['faces']} faces from {data['photos']} labelled photos at `{data['source']}` "
        f"(fingerprint `{data['fingerprint'][:16]}...`; {data['no_face']} photos without a face "
        "found were left out)",
        f"- Faces per class: {counts}",
        f"- New classes: {', '.join(record['new_classes']) or 'none'}",
        f"- Trained: {record['choice']['what']}, chosen by {record['folds']}-fold "
        "cross-validation on these photos only",
        f"- Measured (nested cross-validation, no fold chose anything it scores): "
        f"{record['verdict']}",
        f"- Paired t-test p = {tests['paired_t']['p_value']:.3g} (too optimistic: folds share "
        "training photos); the corrected resampled t-test accounts for that.",
        f"- Detector {record['detector']}, framing as `ferlab predict`; test-time augmentation "
        f"{record['tta']}.",
        "",
        "## Limits",
        "",
        "- Measured on photos like these only; the figures say nothing about other cameras, "
        "people or labels.",
        "- The fold figures are those of the float network; the written file"
        + (
            " is int8, its activation ranges set on these photos"
            if record.get("quantized")
            else " is the float network"
        )
        + f" (it agrees with the float network on {100 * record['file_agreement']:.1f}% of the faces).",
        "",
    ]
    return "\n".join(lines)
