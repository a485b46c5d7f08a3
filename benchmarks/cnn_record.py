"""Record a finished CNN run as JSON: summary, history, and the evaluation on both test splits.

    python benchmarks/cnn_record.py RUN_DIR --data PATH --out benchmarks/results/cnn_cpu_run.json \
        --command "ferlab cnn train ..."
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ferlab.deep import load_cnn
from ferlab.evaluation import evaluate_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--command", default="", help="the training command, to record")
    parser.add_argument("--note", default="")
    parser.add_argument("--tta", nargs="+", default=["none", "flip", "tencrop"])
    args = parser.parse_args()

    run = Path(args.run_dir)
    classifier = load_cnn(run / "model.safetensors")
    record = {
        "command": args.command,
        "note": args.note,
        "config": json.loads((run / "config.json").read_text()),
        "summary": json.loads((run / "summary.json").read_text()),
        "history": json.loads((run / "history.json").read_text()),
        "accuracy": {},
        "reports": {},
    }
    for split in ("public", "private"):
        for tta in args.tta:
            classifier.tta = tta
            started = time.perf_counter()
            out_dir = run / f"eval-{split}-{tta}"
            report = evaluate_split(classifier, args.data, split, out_dir=out_dir)
            record["accuracy"][f"{split}_{tta}"] = report.accuracy
            record["accuracy"][f"{split}_{tta}_seconds"] = round(time.perf_counter() - started, 1)
            if tta == "none":
                record["reports"][split] = report.to_dict()
            print(f"{split} {tta}: {report.accuracy:.4f}", flush=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
