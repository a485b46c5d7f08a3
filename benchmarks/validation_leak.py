"""How much a validation part is worth once another model has trained on it.

Each seed of the CPU recipe holds out its own tenth of FER2013's Training split, so a model of
one seed has trained on about 90% of another seed's validation part. Two measures of that:

1. Every committed model's accuracy on each seed's validation part (no TTA), its own part
   marked: on a part a model trained on, its accuracy says little.
2. From the committed run records, each part's validation accuracy minus its mean test accuracy
   (PublicTest and PrivateTest), 3-seed means, for parts without teachers from other splits
   and for parts taught by them: the second gap less the first estimates how much such
   teachers inflate a student's validation accuracy.

Writes ``benchmarks/results/validation_leak.json``.

    python benchmarks/validation_leak.py --data fer2013-images.tar.gz

The record measured the 16 models committed then; the tree now keeps only the models a recipe,
a config of the recipe or a test uses, so a rerun measures fewer. The others are in git history:
``git checkout c8d6586 -- benchmarks/results/models`` brings them back.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from harness import RESULTS, write_record

MODELS = sorted((RESULTS / "models").glob("fer2013_cnn_cpu_*_seed[0-9].safetensors"))
SEEDS = (0, 1, 2)


def accuracy_matrix(model_paths: list[Path], data, seeds=SEEDS) -> list[dict]:
    """Each model's accuracy on each seed's validation part, and which part is its own."""
    from ferlab.data.split import held_out_part, split_images
    from ferlab.deep import load_cnn

    rows = []
    parts: dict[str, object] = {}
    for path in model_paths:
        cnn = load_cnn(path)
        own = held_out_part(cnn.training_info)
        row = {"model": path.name, "own_split_seed": own["split_seed"], "accuracy": {}}
        for seed in seeds:
            settings = {**own, "split_seed": seed}
            key = json.dumps(settings, sort_keys=True)
            if key not in parts:
                parts[key] = split_images(data, settings, seed).val
            part = parts[key]
            right = cnn.predict(part.images) == part.labels
            row["accuracy"][str(seed)] = round(100 * float(right.mean()), 2)
        print(row, flush=True)
        rows.append(row)
    return rows


def own_and_other(rows: list[dict]) -> dict:
    """Mean accuracy of the models on their own validation part and on the other seeds' parts."""
    own = [r["accuracy"][str(r["own_split_seed"])] for r in rows]
    other = [v for r in rows for s, v in r["accuracy"].items() if s != str(r["own_split_seed"])]
    return {
        "own_part": round(statistics.mean(own), 2),
        "other_parts": round(statistics.mean(other), 2),
    }


def validation_gap(record: dict) -> dict:
    """A run record's 3-seed mean validation accuracy less its mean test accuracy, and how many
    of its teachers held out another part than the student (None when a teacher file is gone;
    all the records hold out a tenth, so the parts differ where their seeds do)."""
    from ferlab.data.split import held_out_part
    from ferlab.deep import load_cnn
    from ferlab.deep.distillation import teacher_paths

    gaps, other = [], []
    for run in record["runs"]:
        s = run["summary"]
        gaps.append(
            100 * (s["val_accuracy"] - (s["public_test_accuracy"] + s["private_test_accuracy"]) / 2)
        )
        if "teachers_on_other_splits" in s:
            other.append(s["teachers_on_other_splits"])
            continue
        teachers = teacher_paths((run["config"].get("distill") or {}).get("teacher"))
        if not all(Path(t).exists() for t in teachers):
            other.append(None)
            continue
        own = held_out_part(run["config"])["split_seed"]
        other.append(
            sum(held_out_part(load_cnn(t).training_info)["split_seed"] != own for t in teachers)
        )
    known = None if None in other else max(other)
    return {"gap": round(statistics.mean(gaps), 2), "teachers_on_other_splits": known}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 (e.g. fer2013-images.tar.gz)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "validation_leak.json"))
    args = parser.parse_args()

    import torch

    from ferlab.data import load_fer2013

    torch.set_num_threads(args.threads)
    rows = accuracy_matrix(MODELS, load_fer2013(args.data))
    records = {}
    for path in sorted(RESULTS.glob("cnn_cpu_*.json")):
        record = json.loads(path.read_text())
        if "runs" in record and len(record["runs"]) == len(SEEDS):
            records[path.stem] = validation_gap(record)
    known = [r for r in records.values() if r["teachers_on_other_splits"] is not None]
    clean = [r["gap"] for r in known if r["teachers_on_other_splits"] == 0]
    taught = [r["gap"] for r in known if r["teachers_on_other_splits"] > 0]
    result = {
        "threads": args.threads,
        "models_on_validation_parts": rows,
        "mean_accuracy": own_and_other(rows),
        "validation_minus_test": records,
        "mean_gap": {
            "no_teachers_from_other_splits": round(statistics.mean(clean), 2),
            "taught_by_other_splits": round(statistics.mean(taught), 2),
        },
    }
    print(json.dumps(result["mean_accuracy"]), json.dumps(result["mean_gap"]))
    write_record(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
