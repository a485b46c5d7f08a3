"""Record finished CNN runs as JSON: summary, history, and the evaluation on both test splits.

    python benchmarks/cnn_record.py RUN_DIR --data PATH --out benchmarks/results/cnn_cpu_run.json \
        --command "ferlab cnn train ..."

With several RUN_DIRs (the seeds of one config) the record holds each run, the mean, spread and
range of every accuracy and per-class recall over the runs, and the accuracy of their ensemble
(mean probabilities) on both test splits; --ensemble-with adds kept model files of further seeds to
that ensemble (e.g. the committed part-2 models of seeds 0-2 beside new runs of seeds 3 and 4), and
--recorded-run takes a run of an earlier record into the spread (a seed run on another machine whose
run folder is gone; its kept model file can join the ensemble through --ensemble-with).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ferlab.deep import load_cnn
from ferlab.evaluation.scoring import evaluate_split
from harness import STAMP_KEYS, write_record

SPLITS = ("public", "private")


def record_run(run: Path, data: str, ttas: list[str]) -> dict:
    """One run's config, summary, history, accuracies (split x TTA, with seconds) and reports."""
    classifier = load_cnn(run / "model.safetensors")
    record = {
        "run": run.name,
        "config": json.loads((run / "config.json").read_text()),
        "summary": json.loads((run / "summary.json").read_text()),
        "history": json.loads((run / "history.json").read_text()),
        "accuracy": {},
        "reports": {},
    }
    for split in SPLITS:
        for tta in ttas:
            classifier.tta = tta
            started = time.perf_counter()
            report = evaluate_split(classifier, data, split, out_dir=run / f"eval-{split}-{tta}")
            record["accuracy"][f"{split}_{tta}"] = report.accuracy
            record["accuracy"][f"{split}_{tta}_seconds"] = round(time.perf_counter() - started, 1)
            if tta == "none":
                record["reports"][split] = report.to_dict()
            print(f"{run.name} {split} {tta}: {report.accuracy:.4f}", flush=True)
    return record


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation, minimum and maximum of ``values``."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "min": float(array.min()),
            "max": float(array.max()), "n": len(array)}  # fmt: skip


def recorded_run(record_file: str, name: str, ttas: list[str]) -> dict:
    """The run called ``name`` in the record ``record_file``, its accuracies cut to ``ttas``."""
    record = json.loads(Path(record_file).read_text(encoding="utf-8"))
    if "runs" in record:
        runs = record["runs"]
    else:  # a record of one run is that run, beside the record's command, note and stamp
        runs = [{k: v for k, v in record.items() if k not in ("note", *STAMP_KEYS)}]
    matches = [run for run in runs if run["run"] == name]
    if len(matches) != 1:
        raise SystemExit(f"cnn_record.py: {record_file} has no single run called {name}")
    missing = [f"{s}_{t}" for s in SPLITS for t in ttas if f"{s}_{t}" not in matches[0]["accuracy"]]
    if missing:
        raise SystemExit(f"cnn_record.py: run {name} of {record_file} lacks {', '.join(missing)}")
    wanted = {f"{s}_{t}{end}" for s in SPLITS for t in ttas for end in ("", "_seconds")}
    accuracy = {k: v for k, v in matches[0]["accuracy"].items() if k in wanted}
    return {**matches[0], "accuracy": accuracy, "recorded_in": Path(record_file).name}


def over_runs(records: list[dict]) -> dict:
    """The spread over runs of validation and test accuracies, training time and recalls."""
    summaries = [r["summary"] for r in records]
    refit = any(s.get("refit") for s in summaries)  # trained on the validation part: no figure
    result = {
        "val_accuracy": None if refit else spread([s["val_accuracy"] for s in summaries]),
        "train_seconds": spread([s["train_seconds"] for s in summaries]),
    }
    for key in records[0]["accuracy"]:
        if not key.endswith("_seconds"):
            result[key] = spread([r["accuracy"][key] for r in records])
    for split in SPLITS:
        recalls = [r["reports"][split]["measures"]["per_class"]["recall"] for r in records]
        result[f"{split}_recall"] = {c: spread([rec[c] for rec in recalls]) for c in recalls[0]}
    return result


class MeanProbabilities:
    """An ensemble behind the classifier interface: the mean of its members' probabilities."""

    input_shape = (48, 48)

    def __init__(self, members: list) -> None:
        self.members = members
        self.class_names = members[0].class_names
        self.training_info = members[0].training_info

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.mean([m.predict_proba(X) for m in self.members], axis=0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


def record_ensemble(runs: list[Path], data: str, extra_models: Sequence[str] = ()) -> dict:
    """Accuracy and per-class recall of the ensemble of the runs and ``extra_models`` (model
    files) on both test splits (no TTA)."""
    files = [run / "model.safetensors" for run in runs] + [Path(f) for f in extra_models]
    ensemble = MeanProbabilities([load_cnn(file) for file in files])
    record = {"members": [run.name for run in runs] + list(extra_models)}
    for split in SPLITS:
        report = evaluate_split(ensemble, data, split)
        record[split] = report.accuracy
        record[f"{split}_recall"] = report.to_dict()["measures"]["per_class"]["recall"]
        print(f"ensemble of {len(files)} {split}: {report.accuracy:.4f}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="", help="the training command, to record")
    parser.add_argument("--note", default="")
    parser.add_argument("--ensemble-with", nargs="+", default=[], metavar="MODEL",
                        help="further model files in the ensemble")  # fmt: skip
    parser.add_argument("--recorded-run", nargs=2, action="append", default=[],
                        metavar=("RECORD", "RUN"), help="a run of an earlier record, e.g. "
                        "benchmarks/results/x.json part3_s0")  # fmt: skip
    parser.add_argument("--tta", nargs="+", default=["none", "flip", "tencrop"])
    args = parser.parse_args()

    runs = [Path(d) for d in args.run_dirs]
    earlier = [recorded_run(file, name, args.tta) for file, name in args.recorded_run]
    records = earlier + [record_run(run, args.data, args.tta) for run in runs]
    if len(records) == 1 and not args.ensemble_with:
        record = {"command": args.command, "note": args.note, **records[0]}
    else:
        record = {
            "command": args.command,
            "note": args.note,
            "over_runs": over_runs(records),
            "ensemble": record_ensemble(runs, args.data, args.ensemble_with),
            "runs": records,
        }
    write_record(args.out, record)  # the training command, and this one as recorded_by
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
