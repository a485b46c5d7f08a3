"""Adding classes to a trained classifier: grow its output layer, freeze or fine-tune, retrain.

Class identity travels by name: the grown model's outputs are the old model's classes in their
order, then the new ones, and every data label is remapped to that order by class name.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ferlab.data import LabeledImages, dataset_spec, load_dataset
from ferlab.errors import ConfigError, DataError, ModelFileError
from ferlab.nn import FullyConnectedNet
from ferlab.runs import RunFolder
from ferlab.settings import ExtendSettings

FREEZE_MODES = ("all-but-last", "none")


# -- class names and labels ------------------------------------------------------------------


def check_new_classes(
    old_classes: list[str] | None, new_classes: list[str], data_classes: list[str]
):
    """Reject new class names that are empty, repeated, already known or absent from the data."""
    if not old_classes:
        raise ModelFileError("the model stores no class names, so new classes cannot be placed")
    if not new_classes:
        raise ConfigError("--new-classes needs at least one class name")
    repeated = sorted({c for c in new_classes if new_classes.count(c) > 1})
    if repeated:
        raise ConfigError(f"--new-classes repeats {repeated}")
    known = sorted(set(new_classes) & set(old_classes))
    if known:
        raise ConfigError(f"the model already has class(es) {known}")
    unknown = sorted(set(new_classes) - set(data_classes))
    if unknown:
        raise DataError(f"unknown class name(s) {unknown}; the data has: {', '.join(data_classes)}")
    missing = sorted(set(old_classes) - set(data_classes))
    if missing:
        raise DataError(f"the data has none of the model's class(es) {missing}")


def relabel(part: LabeledImages, class_names: list[str]) -> LabeledImages:
    """Keep the samples of the named classes and number their labels in ``class_names`` order."""
    index = {name: i for i, name in enumerate(class_names)}
    mapping = np.array([index.get(name, -1) for name in part.class_names], dtype=np.int64)
    keep = mapping[part.labels] >= 0
    kept = part.subset(keep)
    return LabeledImages(
        kept.images, mapping[kept.labels], list(class_names), kept.splits, kept.names
    )


def oversample(part: LabeledImages, seed: int) -> LabeledImages:
    """Every class drawn with replacement up to the largest class's count (seeded), shuffled."""
    rng = np.random.default_rng(seed)
    counts = np.bincount(part.labels)
    target = counts.max()
    index = np.concatenate(
        [
            np.concatenate([where, rng.choice(where, target - len(where))])
            for where in (np.flatnonzero(part.labels == c) for c in np.flatnonzero(counts))
        ]
    )
    return part.subset(rng.permutation(index))


# -- fully connected models ------------------------------------------------------------------


def grow_fully_connected(model: FullyConnectedNet, new_classes: list[str]) -> FullyConnectedNet:
    """A copy of ``model`` with zero-initialised outputs for ``new_classes`` after the old ones."""
    L = model.num_layers
    W, b = model.params.get(f"W{L}"), model.params.get(f"b{L}")
    fan_in = [model.input_dim, *model.hidden_dims][-1]
    if W is None or b is None or W.shape != (fan_in, model.num_classes):
        raise ModelFileError(f"the model has no output layer W{L}, b{L} of the expected shape")
    grown = FullyConnectedNet(
        model.input_dim,
        model.hidden_dims,
        model.num_classes + len(new_classes),
        dropout=model.dropout,
        reg=model.reg,
        weight_scale=model.weight_scale,
        dtype=model.dtype,
        seed=model.seed,
    )
    for name, value in model.params.items():
        if name in (f"W{L}", f"b{L}"):
            grown.params[name][...] = 0
            grown.params[name][..., : model.num_classes] = value
        else:
            grown.params[name] = value.copy()
    grown.preprocessor = model.preprocessor
    grown.class_names = [*model.class_names, *new_classes]
    grown.input_shape = model.input_shape
    grown.training_info = dict(model.training_info or {})
    return grown


def set_freeze(model: FullyConnectedNet, freeze: str) -> None:
    """Freeze all but the output layer (``all-but-last``) or make every layer trainable."""
    if freeze not in FREEZE_MODES:
        raise ConfigError(f"--freeze must be one of {', '.join(FREEZE_MODES)}, got {freeze!r}")
    L = model.num_layers
    for name in model.params:
        model.trainable[name] = freeze == "none" or name in (f"W{L}", f"b{L}")


# -- evaluation ------------------------------------------------------------------------------


def old_new_scores(
    predict, test: LabeledImages, old_classes: list[str], new_classes: list[str]
) -> dict:
    """Accuracy on the old classes' samples and recall of each new class (labels by name)."""
    part = relabel(test, [*old_classes, *new_classes])
    predicted = predict(part.images)
    old = part.labels < len(old_classes)
    result = {
        "n_old": int(old.sum()),
        "old_class_accuracy": float((predicted[old] == part.labels[old]).mean())
        if old.any()
        else None,
    }
    recalls = {}
    for i, name in enumerate(new_classes, start=len(old_classes)):
        mask = part.labels == i
        recalls[name] = float((predicted[mask] == i).mean()) if mask.any() else None
    if new_classes:
        result["new_class_recall"] = recalls
        result["n_new"] = int((~old).sum())
        result["overall_accuracy"] = float((predicted == part.labels).mean())
    return result


# -- the command -----------------------------------------------------------------------------


def data_for_model(
    training_info: dict | None, data_path: str | None, *, strict: bool, use_cache: bool
) -> tuple[LabeledImages, LabeledImages, dict[str, LabeledImages], dict]:
    """The model's own training split again: (train, val, tests) with the old validation part."""
    from ferlab.data.split import recorded_splits

    dataset = ((training_info or {}).get("data") or {}).get("dataset")
    if dataset is None:
        raise ModelFileError("the model does not record which data set it was trained on")
    data = load_dataset(dataset, data_path, strict=strict, use_cache=use_cache)
    # The same seed and val_size give the same hold-out split, so the old model's validation
    # images stay out of the new training data.
    rebuilt = recorded_splits(data, training_info, every_class=True)  # new classes are needed
    splits, data_config = rebuilt.splits, rebuilt.data_config
    return splits.train, splits.val, splits.tests, data_config


def extend_model(
    model_path: str | Path,
    data_path: str | None,
    new_classes: list[str],
    out_dir: str | Path,
    settings: ExtendSettings,
    *,
    strict: bool = False,
    use_cache: bool = True,
    verbose: bool = True,
) -> dict:
    """Grow a saved model by ``new_classes``, retrain it and report forgetting and new recall.

    Writes ``out_dir/model.npz`` (or ``.safetensors``, the kind of the input) and
    ``out_dir/extend.json``.
    """
    from ferlab.inference.models import SUFFIXES, load_model, model_kind

    kind = model_kind(model_path)
    if kind not in EXTENDERS:
        raise ConfigError(
            f"{model_path}: a {kind} model cannot be extended; extend the model it was exported from"
        )
    old = load_model(model_path)
    info = old.training_info
    train, val, tests, data_config = data_for_model(
        info, data_path, strict=strict, use_cache=use_cache
    )
    check_new_classes(old.class_names, new_classes, train.class_names)
    old_classes = list(old.class_names)
    test_name, test = report_split(tests, settings.test_split, data_config["dataset"])
    train, val = (
        relabel(train, [*old_classes, *new_classes]),
        relabel(val, [*old_classes, *new_classes]),
    )
    if settings.balance:
        train = oversample(train, settings.seed)

    def predict_old(images):
        return old.predict_proba(images).argmax(axis=1)

    before = old_new_scores(predict_old, test, old_classes, [])
    started = time.perf_counter()
    grown, history = EXTENDERS[kind](old, new_classes, train, val, settings, verbose)
    seconds = time.perf_counter() - started

    def predict_new(images):
        return grown.predict_proba(images).argmax(axis=1)

    after = old_new_scores(predict_new, test, old_classes, new_classes)
    trainable = _trainable_parameter_count(grown)
    grown.training_info = extended_info(info, data_config, model_path, new_classes, settings)
    out_path = grown.save(Path(out_dir) / f"model{SUFFIXES[kind]}")
    report = {
        "model": str(model_path),
        "out": str(out_path),
        "kind": kind,
        "freeze": settings.freeze,
        "old_classes": old_classes,
        "new_classes": list(new_classes),
        "test_split": test_name,
        "n_train": len(train),
        "n_val": len(val),
        "trainable_parameters": trainable,
        "epochs": len(history.get("train_loss", [])),
        "train_seconds": round(seconds, 2),
        "before": before,
        "after": after,
        "forgetting": forgetting(before, after),
        "settings": settings.model_dump(),
    }
    report_path = RunFolder(out_dir).write_json("extend.json", report)
    report["report_path"] = str(report_path)
    return report


def extended_info(
    info: dict | None, data_config: dict, model_path, new_classes: list[str], settings
) -> dict:
    """The grown model's training record: its parent's, with the data of all classes, the
    parent's path, the new classes and how it was retrained."""
    return {
        **(info or {}),
        "data": {**data_config, "exclude_classes": []},
        "seed": int((info or {}).get("seed", 0)),
        "extended_from": str(model_path),
        "new_classes": list(new_classes),
        "freeze": settings.freeze,
    }


def report_split(tests: dict, name: str | None, dataset: str) -> tuple[str, object]:
    """The test split extend reports on: ``name``, or the data set's first test split."""
    name = name or dataset_spec(dataset).test_splits[0]
    if name not in tests:
        raise DataError(f"the data has no {name!r} split to report on; have {sorted(tests)}")
    return name, tests[name]


def forgetting(before: dict, after: dict) -> float | None:
    """How much accuracy on the old classes fell (None when there were no old-class samples)."""
    if before["old_class_accuracy"] is None:
        return None
    return before["old_class_accuracy"] - after["old_class_accuracy"]


def _trainable_parameter_count(model) -> dict:
    if isinstance(model, FullyConnectedNet):
        sizes = {name: p.size for name, p in model.params.items()}
        trained = sum(size for name, size in sizes.items() if model.trainable[name])
        return {"trained": int(trained), "total": int(sum(sizes.values()))}
    module = model.module
    total = sum(p.numel() for p in module.parameters())
    trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trained": int(trained), "total": int(total)}


def _extend_fully_connected(
    old: FullyConnectedNet,
    new_classes: list[str],
    train: LabeledImages,
    val: LabeledImages,
    settings: ExtendSettings,
    verbose: bool,
) -> tuple[FullyConnectedNet, dict]:
    from ferlab.nn import Solver

    grown = grow_fully_connected(old, new_classes)
    set_freeze(grown, settings.freeze)
    # The old model's preprocessing stays: the frozen first layer expects that input scale.
    data = {
        "X_train": grown.preprocess(train.images),
        "y_train": train.labels,
        "X_val": grown.preprocess(val.images),
        "y_val": val.labels,
    }
    if verbose:
        print(
            f"extending {old.num_classes} -> {grown.num_classes} classes on {len(train)} samples "
            f"(freeze {settings.freeze})",
            file=sys.stderr,
        )
    solver = Solver(
        grown,
        data,
        optimizer=settings.optimizer,
        lr=settings.lr,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        patience=settings.patience,
        seed=settings.seed,
        verbose=verbose,
    )
    history = solver.train()
    return grown, history


# -- CNN models (optional extra) -------------------------------------------------------------

HEAD_NAME = "head"


def grow_linear_head(module, new_count: int, layer_name: str = HEAD_NAME) -> None:
    """Replace ``module.<layer_name>`` (an nn.Linear) by one with ``new_count`` zero-initialised
    extra outputs after the old ones."""
    import torch
    from torch import nn

    head = getattr(module, layer_name, None)
    if not isinstance(head, nn.Linear):
        raise ModelFileError(f"the network has no linear output layer named {layer_name!r}")
    grown = nn.Linear(head.in_features, head.out_features + new_count, bias=head.bias is not None)
    grown = grown.to(device=head.weight.device, dtype=head.weight.dtype)
    with torch.no_grad():
        grown.weight.zero_()
        grown.weight[: head.out_features] = head.weight
        if head.bias is not None:
            grown.bias.zero_()
            grown.bias[: head.out_features] = head.bias
    setattr(module, layer_name, grown)


def freeze_cnn(module, freeze: str, layer_name: str = HEAD_NAME) -> None:
    """Train only ``layer_name`` (``all-but-last``), with frozen batch norms kept in eval mode."""
    import types

    from torch import nn

    if freeze not in FREEZE_MODES:
        raise ConfigError(f"--freeze must be one of {', '.join(FREEZE_MODES)}, got {freeze!r}")
    head = getattr(module, layer_name)
    head_params = {id(p) for p in head.parameters()}
    for param in module.parameters():
        param.requires_grad_(freeze == "none" or id(param) in head_params)
    if freeze == "none":
        return
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            # Running statistics are frozen weights too: the trainer's module.train() must not
            # switch these layers back to updating them.
            layer.train = types.MethodType(
                lambda self, mode=True: nn.Module.train(self, False), layer
            )
            layer.eval()


def _extend_cnn(old, new_classes: list[str], train, val, settings: ExtendSettings, verbose: bool):
    """Grow, freeze and retrain a :class:`~ferlab.deep.CNNClassifier`; return it and the history."""
    import copy

    import torch

    from ferlab.deep import CNNClassifier
    from ferlab.deep.trainer import CNNTrainer, TensorData
    from ferlab.settings import CNNSettings, parse_config

    module = copy.deepcopy(old.module).to("cpu")
    grow_linear_head(module, len(new_classes))
    freeze_cnn(module, settings.freeze)
    optimizer = settings.optimizer if settings.optimizer in ("sgd", "adamw") else "adamw"
    cnn_settings = parse_config(
        {
            "seed": settings.seed,
            "augment": {"crop": old.crop},
            "solver": {
                "optimizer": optimizer,
                "lr": settings.lr,
                "batch_size": settings.batch_size,
                "epochs": settings.epochs,
                "patience": settings.patience,
                "schedule": "cosine",
                "warmup": 0.0,
            },
            "device": {"device": "cpu", "amp": False, "channels_last": False},
        },
        CNNSettings,
    )
    torch.manual_seed(settings.seed)
    device = torch.device("cpu")
    data = TensorData.from_arrays(train.images, train.labels, val.images, val.labels, device)
    trainer = CNNTrainer(
        cnn_settings, module, data, old.mean, old.std, device=device, verbose=verbose
    )
    history = trainer.train()
    meta = copy.deepcopy(old.meta)
    meta["architecture"]["num_classes"] = len(old.class_names) + len(new_classes)
    meta["class_names"] = [*old.class_names, *new_classes]
    grown = CNNClassifier(
        module, meta["class_names"], old.mean, old.std, old.crop, tta=old.tta, meta=meta
    )
    return grown, history


# How each model kind grows, freezes and retrains (an ONNX export cannot be retrained).
EXTENDERS = {"fully_connected": _extend_fully_connected, "cnn": _extend_cnn}
