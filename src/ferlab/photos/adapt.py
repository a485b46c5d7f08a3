"""Adapting a model to a user's labelled photos, with the statistics to know whether it helped.

How much to train (the head alone or the whole network, and for how many epochs, or not at
all) is chosen by cross-validation on the user's photos only. The paired test between the
original and the adapted model is nested so that no fold it reports chose anything: on each of
k stratified folds, an inner cross-validation on the other folds chooses, the network is
trained on the other folds and both models are scored on the fold. The fold errors go through
:func:`ferlab.compare.paired_tests` (the corrected resampled t-test and Wilcoxon). The model
written at the end is trained on every photo with the choice of the k-fold cross-validation.
"""

from __future__ import annotations

import copy
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ferlab.compare import ALPHA, cv_folds, paired_tests
from ferlab.errors import ConfigError, DataError
from ferlab.photos.outputs import (
    MODEL_FILES,
    data_facts,
    file_record,
    is_quantized,
    parent_facts,
    sha256_of,
    write_adapted,
    write_outputs,
)
from ferlab.photos.sets import PhotoSet, class_indices, load_photo_set

INNER_FOLDS = 3


def check_class_sizes(labels: np.ndarray, class_names: list[str], folds: int) -> None:
    """Refuse, in one line, fewer than 3 folds or a class with fewer photos than folds."""
    if folds < 3:
        raise ConfigError(
            f"--folds must be at least 3 (the choice is cross-validated inside each fold), got {folds}"
        )
    counts = np.bincount(labels, minlength=len(class_names))
    small = [(class_names[i], int(c)) for i, c in enumerate(counts) if 0 < c < folds]
    if small:
        listed = ", ".join(f"{name} has {count}" for name, count in small)
        raise DataError(
            f"too few photos with a face for {folds} folds: {listed}; each class needs at least "
            f"{folds} (add photos, drop the class, or lower --folds)"
        )


def fold_errors(probabilities: dict[int, np.ndarray], labels: np.ndarray) -> dict[int, float]:
    """Error rate at each epoch count of one run's scored probabilities."""
    return {e: float((p.argmax(axis=1) != labels).mean()) for e, p in probabilities.items()}


def restandardised(network, images: np.ndarray):
    """A shallow copy of a CNN classifier whose input standardisation is that of ``images``
    (its module is shared, not copied)."""
    from ferlab.photos.tune import photo_standardisation

    copied = copy.copy(network)
    copied.mean, copied.std = photo_standardisation(images)
    return copied


def _runs(network, crops, labels, train_idx, test_idx, seed, tta) -> dict:
    """Errors on ``test_idx`` of every candidate choice fitted on ``train_idx``: {Choice: error}.

    The photos' standardisation is computed on ``train_idx`` only; the parent's error is the
    float network's with its own standardisation."""
    from ferlab.photos.tune import DEPTHS, PARENT, Choice, front_outputs, split_network, train_end

    network.tta = tta
    test = labels[test_idx]
    parent_pred = network.predict_proba(crops[test_idx]).argmax(axis=1)
    errors = {PARENT: float((parent_pred != test).mean())}
    adjusted = restandardised(network, crops[train_idx])
    for depth in DEPTHS:
        front, end = split_network(adjusted.module, depth)
        train_in = front_outputs(adjusted, front, crops[train_idx])
        test_in = front_outputs(adjusted, front, crops[test_idx])
        probs = train_end(
            end, train_in, labels[train_idx], depth, seed=seed, score=test_in, tta=tta,
            crop=adjusted.crop,
        )  # fmt: skip
        for epochs, error in fold_errors(probs, test).items():
            if epochs == 0 and depth != DEPTHS[0]:
                continue  # no training is the same whatever the depth
            errors[Choice("photos", depth, epochs)] = error
    return errors


def best_choice(errors: list[dict]) -> tuple:
    """The choice with the lowest mean error over folds, unless the parent is within one
    standard error of it; and every mean error.

    Ties go to the simplest (:func:`candidates`). The parent's fold-by-fold excess error over
    the best must exceed its own standard error for the best to displace it (the
    one-standard-error rule, Breiman et al. 1984; Hastie et al., *The Elements of Statistical
    Learning*, 7.10, applied to the parent alone): photos like the parent's keep the parent
    rather than a retrained network that won by noise. Among the adapted candidates the best
    is taken: stepping down to a simpler adapted one too gave up most of what adapting won on
    shifted PublicTest photos (``benchmarks/adapt_shift.py --split public_test``)."""
    from ferlab.photos.tune import PARENT, candidates

    order = candidates()
    means = {c: float(np.mean([e[c] for e in errors])) for c in order}
    best = min(order, key=lambda c: (round(means[c], 9), order.index(c)))
    if best == PARENT:
        return best, means
    excess = np.array([e[PARENT] - e[best] for e in errors])
    spread = excess.std(ddof=1) / np.sqrt(len(excess)) if len(excess) > 1 else 0.0
    return (PARENT if excess.mean() <= spread + 1e-12 else best), means


def cross_validate(
    parent, network, crops: np.ndarray, labels: np.ndarray, *, folds: int, seed: int,
    tta: str, verbose: bool,
) -> dict:  # fmt: skip
    """The nested cross-validation: per fold, the parent file's error, the inner choice and
    the adapted error; the k-fold mean error of every choice (which the final model uses); and
    every choice's error on every outer and inner fold (``errors``: {"outer": [{key: error}],
    "inner": [[{key: error}] per inner fold] per outer fold})."""
    from tqdm.auto import tqdm

    from ferlab.common.progress import show_bars

    parent_pred = np.asarray(parent.predict_proba(crops)).argmax(axis=1)
    splits = cv_folds(labels, folds, 1, seed)
    rows, outer, inners = [], [], []
    bar = tqdm(splits, desc="folds", unit="fold", disable=not show_bars(verbose), file=sys.stderr)
    for _, fold, train_idx, test_idx in bar:
        fold_seed = seed + 1000 + fold
        outer_errors = _runs(network, crops, labels, train_idx, test_idx, fold_seed, tta)
        outer.append(outer_errors)
        inner_labels = labels[train_idx]
        present = np.bincount(inner_labels)
        inner_k = min(INNER_FOLDS, int(present[present > 0].min()))
        inner = [
            _runs(network, crops, labels, train_idx[a], train_idx[b], fold_seed + 1 + i, tta)
            for _, i, a, b in cv_folds(inner_labels, inner_k, 1, fold_seed)
        ]
        inners.append(inner)
        choice, _ = best_choice(inner)
        row = {
            "fold": fold,
            "n_train": len(train_idx),
            "n_test": len(test_idx),
            "inner_folds": inner_k,
            "choice": choice.key,
            "error_original": float((parent_pred[test_idx] != labels[test_idx]).mean()),
            "error_adapted": outer_errors[choice],
        }
        rows.append(row)
        if verbose:
            tqdm.write(
                f"fold {fold}: original error {row['error_original']:.4f}, adapted "
                f"({choice.describe()}) {row['error_adapted']:.4f}",
                file=sys.stderr,
            )
    choice, means = best_choice(outer)
    keyed = [[{c.key: e for c, e in run.items()} for run in inner] for inner in inners]
    candidate_errors = {
        "outer": [{c.key: e for c, e in run.items()} for run in outer], "inner": keyed,
    }  # fmt: skip
    return {"folds": rows, "choice": choice, "mean_errors": means, "errors": candidate_errors}


def photo_verdict(record: dict) -> str:
    """One line: whether adapting helped on these photos, with the corrected test's p-value."""
    original, adapted = record["original"]["mean_error"], record["adapted"]["mean_error"]
    tests = record["tests"]
    p, w = tests["corrected_resampled_t"]["p_value"], tests["wilcoxon"]["p_value"]
    where = f"over {record['folds']} folds of {record['n_faces']} faces"
    figures = (
        f"accuracy {100 * (1 - original):.1f}% -> {100 * (1 - adapted):.1f}% {where} "
        f"(corrected resampled t-test p = {p:.3g}, Wilcoxon p = {w:.3g})"
    )
    if p < ALPHA and adapted < original:
        return f"adapting helped: {figures}"
    if p < ALPHA:
        return f"adapting made it worse: {figures}; keep the original model"
    return f"no significant difference at the {ALPHA:g} level: {figures}"


def starting_network(parent, crops: np.ndarray, class_names: list[str]) -> tuple[object, float]:
    """The float network adapting starts from (a copy of a CNN parent, or the network rebuilt
    from an ONNX one) with outputs for ``class_names``, and how often it agrees with the parent."""
    from ferlab.deep import CNNClassifier
    from ferlab.photos.parent import rebuild_from_onnx
    from ferlab.runs.extend import grow_linear_head

    if isinstance(parent, CNNClassifier):
        network, agreement = copy.deepcopy(parent).to("cpu"), 1.0
        network.tta = "none"
    else:
        network, agreement = rebuild_from_onnx(parent, crops[:256])
    added = class_names[len(parent.class_names) :]
    if added:
        grow_linear_head(network.module, len(added))
        network.class_names = list(class_names)
        network.meta["class_names"] = list(class_names)
        network.meta["architecture"]["num_classes"] = len(class_names)
    return network, agreement


def trained_on_all(network, choice, crops: np.ndarray, labels: np.ndarray, seed: int):
    """``network`` changed as ``choice`` says (standardisation, depth, epochs) on every face."""
    from ferlab.photos.tune import front_outputs, split_network, train_end

    if choice.standardise == "photos":
        network = restandardised(network, crops)
        network.meta["preprocessing"] = {
            "mean": network.mean, "std": network.std, "crop": network.crop,
        }  # fmt: skip
    if choice.epochs:
        front, end = split_network(network.module, choice.depth)
        inputs = front_outputs(network, front, crops)
        trained = train_end(
            end, inputs, labels, choice.depth, epochs=(choice.epochs,), seed=seed,
            crop=network.crop,
        )  # fmt: skip
        end.load_state_dict(trained[choice.epochs].state_dict())
    network.module.eval()
    return network


def adapt_faces(
    parent, crops: np.ndarray, labels: np.ndarray, class_names: list[str], *,
    folds: int = 5, seed: int = 0, tta: str = "flip", verbose: bool = True,
) -> tuple[dict, object]:  # fmt: skip
    """Cross-validate, test and train the adapted network on face crops (N, 48, 48) uint8 with
    labels (N,) over ``class_names`` (the parent's classes, then any new ones).

    Returns the record (choice, folds, tests, verdict) and the adapted
    :class:`~ferlab.deep.CNNClassifier` trained on every face.
    """
    import torch

    check_class_sizes(labels, class_names, folds)
    torch.manual_seed(seed)
    started = time.perf_counter()
    network, agreement = starting_network(parent, crops, class_names)
    added = class_names[len(parent.class_names) :]
    parent_tta = getattr(parent, "tta", "none")
    if hasattr(parent, "tta"):
        parent.tta = tta
    try:
        cv = cross_validate(
            parent, network, crops, labels, folds=folds, seed=seed, tta=tta, verbose=verbose
        )
    finally:
        if hasattr(parent, "tta"):
            parent.tta = parent_tta
    rows = cv["folds"]
    original = [r["error_original"] for r in rows]
    adapted = [r["error_adapted"] for r in rows]
    n_train = float(np.mean([r["n_train"] for r in rows]))
    n_test = float(np.mean([r["n_test"] for r in rows]))
    choice = cv["choice"]
    network = trained_on_all(network, choice, crops, labels, seed)
    network.tta = tta
    record = {
        "n_faces": len(labels),
        "class_names": list(class_names),
        "new_classes": list(added),
        "class_counts": dict(
            zip(class_names, map(int, np.bincount(labels, minlength=len(class_names))), strict=True)
        ),
        "folds": folds,
        "seed": seed,
        "tta": tta,
        "rebuilt_agreement": agreement,
        "choice": {
            "standardise": choice.standardise,
            "depth": choice.depth,
            "epochs": choice.epochs,
            "what": choice.describe(),
            "changed": choice.standardise != "model",
        },  # fmt: skip
        "cv_mean_error": {c.key: e for c, e in cv["mean_errors"].items()},
        "fold_results": rows,
        "candidate_errors": cv["errors"],
        "original": {"errors": original, "mean_error": float(np.mean(original))},
        "adapted": {"errors": adapted, "mean_error": float(np.mean(adapted))},
        "tests": paired_tests(original, adapted, n_train, n_test),
        "alpha": ALPHA,
        "seconds": round(time.perf_counter() - started, 2),
    }
    record["verdict"] = photo_verdict(record)
    return record, network


def adapt_photos(
    photos: str | Path | PhotoSet,
    model="shipped",
    *,
    out_dir: str | Path,
    mapping: dict[str, str] | None = None,
    new_classes: list[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    detector: str = "blazeface",
    tta: str = "flip",
    verbose: bool = True,
) -> dict:
    """Adapt ``model`` (a CNN file, a ferlab ONNX file or ``"shipped"``) to labelled photos.

    Writes into ``out_dir``: the adapted model (``model.onnx`` for an ONNX parent, int8 when
    the parent is; ``model.safetensors`` for a CNN one), ``adapt.json`` (the choice, every
    fold, the paired tests, the verdict and the written file's prediction for every face),
    ``model_card.json`` and ``MODEL_CARD.md`` naming the parent and the data, and
    ``no_face.txt``. Labels in ``new_classes`` become new outputs (``extend``'s head growth).
    Returns the record.
    """
    from ferlab.assets import resolve_model
    from ferlab.inference.models import load_model, model_kind
    from ferlab.photos.evaluate import make_recognizer
    from ferlab.photos.faces import find_faces

    if not isinstance(photos, PhotoSet):
        photos = load_photo_set(photos, mapping)
    parent_path = resolve_model(model)
    kind = model_kind(parent_path)
    if kind not in MODEL_FILES:
        raise ConfigError(
            f"{parent_path}: a {kind} model; adapt works on CNN models (.safetensors) and their "
            "ONNX exports (the shipped model is one)"
        )
    recognizer = make_recognizer(load_model(parent_path), detector=detector, tta="none")
    parent = recognizer.model
    class_indices(photos.labels, parent.class_names, new_classes or [])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = find_faces(recognizer, photos, verbose=verbose)
    face_labels = [photos.labels[r] for r in faces.rows]
    labels, class_names = class_indices(face_labels, parent.class_names, new_classes or [])
    record, network = adapt_faces(
        parent, faces.crops, labels, class_names, folds=folds, seed=seed, tta=tta, verbose=verbose
    )
    quantized = kind == "onnx" and bool(getattr(parent, "meta", {}).get("quantization"))
    network.training_info = {
        **(parent.training_info or {}),
        "adapted_from": {"path": str(parent_path), "sha256": sha256_of(parent_path)},
        "adapted_on": {"photos": photos.source, "faces": len(labels), "seed": seed},
    }
    if not record["choice"]["changed"] and not record["new_classes"]:
        target = out_dir / MODEL_FILES[kind]
        shutil.copyfile(parent_path, target)  # cross-validation chose to change nothing
    else:
        target = write_adapted(network, kind, out_dir, faces.crops, quantized=quantized)
        quantized = quantized and is_quantized(target)
    record.update(
        file_record(target, network, faces, labels, class_names, photos, tta=tta),
        quantized=quantized,
        detector=recognizer.detector.name,
        parent=parent_facts(parent, parent_path, kind),
        data=data_facts(photos, faces, labels),
    )
    write_outputs(out_dir, record, photos, faces)
    if verbose:
        print(record["verdict"], file=sys.stderr)
    return record
