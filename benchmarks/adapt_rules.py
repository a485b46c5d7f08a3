"""How ``adapt`` should choose: selection rules and candidate sets compared on the same folds.

    python benchmarks/adapt_rules.py benchmarks/results/adapt_shift_public_design.json

Reads an ``adapt_shift.py`` record whose runs kept every candidate's error on every outer and
inner fold (``candidate_errors``), and replays the nested test under each rule and candidate
set without training again: per outer fold, the rule chooses on the inner folds and the chosen
candidate's outer error is the adapted error; then the corrected resampled t-test against the
parent file. Design records only (``--split public_test``): a rule chosen here is then measured
once on PrivateTest. Writes ``benchmarks/results/adapt_rules.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from harness import RESULTS, write_record

RESULT = RESULTS / "adapt_rules.json"
SETS = {
    "3, 6 and 12 epochs": [
        "model:head:0", "photos:head:0", "photos:head:3", "photos:head:6", "photos:head:12",
        "photos:all:3", "photos:all:6", "photos:all:12",
    ],
    "6 epochs": ["model:head:0", "photos:head:0", "photos:head:6", "photos:all:6"],
}  # fmt: skip


def _means(errors: list[dict], order: list[str]) -> dict[str, float]:
    return {c: float(np.mean([e[c] for e in errors])) for c in order}


def _best(errors: list[dict], order: list[str]) -> str:
    means = _means(errors, order)
    return min(order, key=lambda c: (round(means[c], 9), order.index(c)))


def _within_one_se(errors: list[dict], choice: str, best: str) -> bool:
    excess = np.array([e[choice] - e[best] for e in errors])
    return excess.mean() <= excess.std(ddof=1) / np.sqrt(len(excess)) + 1e-12


def simplest_within_one_se(errors: list[dict], order: list[str]) -> str:
    """The first candidate, simplest first, within one standard error of the best."""
    best = _best(errors, order)
    return next(c for c in order[: order.index(best) + 1] if _within_one_se(errors, c, best))


def parent_within_one_se(errors: list[dict], order: list[str]) -> str:
    """The parent when within one standard error of the best, otherwise the best."""
    best = _best(errors, order)
    return order[0] if _within_one_se(errors, order[0], best) else best


RULES = {
    "simplest within one se": simplest_within_one_se,
    "parent within one se, else the best": parent_within_one_se,
}


def replay(run: dict, rule, order: list[str]) -> dict:
    """The nested test of one run under ``rule`` and candidates ``order``."""
    from ferlab.compare import paired_tests

    errors = run["candidate_errors"]
    folds = run["fold_results"]
    original = [f["error_original"] for f in folds]
    chosen = [rule(inner, order) for inner in errors["inner"]]
    adapted = [outer[c] for outer, c in zip(errors["outer"], chosen, strict=True)]
    n_train = float(np.mean([f["n_train"] for f in folds]))
    n_test = float(np.mean([f["n_test"] for f in folds]))
    tests = paired_tests(original, adapted, n_train, n_test)
    return {
        "accuracy_original": round(1 - float(np.mean(original)), 4),
        "accuracy_adapted": round(1 - float(np.mean(adapted)), 4),
        "corrected_t_p": round(tests["corrected_resampled_t"]["p_value"], 4),
        "inner_choices": chosen,
        "final_choice": rule(errors["outer"], order),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path, help="an adapt_shift.py record (a design split)")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    source = json.loads(args.record.read_text())
    runs = {f"{n} shifted": r for n, r in source["adapted"].items()}
    runs["control (unshifted)"] = source["control_unshifted"]
    results = {}
    for run_name, run in runs.items():
        for rule_name, rule in RULES.items():
            for set_name, order in SETS.items():
                row = replay(run, rule, order)
                results.setdefault(run_name, {}).setdefault(rule_name, {})[set_name] = row
                print(
                    f"{run_name:20s} {rule_name:36s} {set_name:18s} "
                    f"{100 * row['accuracy_original']:.1f}% -> {100 * row['accuracy_adapted']:.1f}%"
                    f" p = {row['corrected_t_p']:.3f}  final {row['final_choice']}"
                )
    write_record(
        args.out,
        {
            "command": f"python benchmarks/adapt_rules.py {args.record}",
            "source": str(args.record),
            "split": source.get("split", "private_test"),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
