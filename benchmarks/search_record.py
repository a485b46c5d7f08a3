"""The JSON record of a finished search: counts, best-so-far curve, best trial and its retrain.

    python benchmarks/search_record.py --study fer2013-tpe --study-dir runs/search \
        --command "ferlab search tpe spaces/fer2013_tpe ..." \
        --retrain RUN_DIR --retrain-command "ferlab search retrain ..." \
        --out benchmarks/results/search_fer2013_tpe.json

RUN_DIR is the folder ``ferlab search retrain`` wrote (its summary.json holds both test splits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ferlab.search.report import best_so_far, completed, summary_counts
from ferlab.search.storage import storage_spec
from ferlab.search.study import open_study
from harness import write_record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True)
    parser.add_argument("--study-dir")
    parser.add_argument("--storage")
    parser.add_argument("--command", required=True, help="the search command, for the record")
    parser.add_argument("--retrain", help="the retrained run's folder")
    parser.add_argument("--retrain-command")
    parser.add_argument("--note", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    study = open_study(args.study, storage_spec(args.storage, args.study, args.study_dir))
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    best = completed(study)[0]
    record = {
        "command": args.command,
        "note": args.note,
        "started": min(starts).isoformat(timespec="seconds"),
        "last_finished": max(ends).isoformat(timespec="seconds"),
        "wall_minutes": round((max(ends) - min(starts)).total_seconds() / 60, 1),
        "states": summary_counts(study),
        "best": {
            "trial": best.number,
            "val_accuracy": best.value,
            "epochs": len(best.intermediate_values),
            "user_attrs": {k: v for k, v in best.user_attrs.items() if k != "config"},
            "params": best.params,
            "config": best.user_attrs.get("config"),
        },
        "best_so_far": best_so_far(study),
    }
    if args.retrain:
        summary = json.loads((Path(args.retrain) / "summary.json").read_text())
        record["retrain"] = {"command": args.retrain_command, "summary": summary}
    write_record(args.out, record)
    print(json.dumps({k: record[k] for k in ("wall_minutes", "states")}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
