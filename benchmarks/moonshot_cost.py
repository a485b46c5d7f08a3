"""What a step toward the best published FER2013 network (about 73-74%, ~300 GPU epochs) would
cost on this CPU, estimated from measured step times.

It trains nothing: it combines the seconds per training step measured by
``benchmarks/recipe_time.py`` (the shipped CNN's recipe, float32 and bfloat16, one thread) and
the training-step ratios of wider networks measured side by side by ``benchmarks/width_speed.py``,
and writes ``benchmarks/results/moonshot_cost.json``: hours of one CPU thread for a 300-epoch run
of the shipped network and of wider teachers, and for distilling a teacher into the shipped
student with the recipe's part 3.
"""

from __future__ import annotations

import argparse
import json

from harness import RESULTS, write_record

RESULT = RESULTS / "moonshot_cost.json"
PUBLISHED_EPOCHS = 300  # the published 73% recipes (e.g. VGG-style nets trained ~300 epochs)


def load(name: str) -> dict:
    """A committed benchmark record."""
    return json.loads((RESULTS / name).read_text())


TEACHER_VIEWS_MINUTES = 25  # the shipped recipe's part 3: three teachers' logits on its views


def estimate(recipe: dict, widths: dict, part3: dict, epochs: int) -> dict:
    """Hours of one thread per run, for each network width and precision, and for the shipped
    recipe's part 3 (distillation into the shipped student) with three teachers of each width,
    whose logits on the views cost as their inference does."""
    steps = recipe["steps_per_epoch"]
    part1 = next(p for p in recipe["parts"] if p["part"].startswith("1"))
    student_minutes = part3["over_runs"]["train_seconds"]["mean"] / 60
    teachers = {}
    for network in widths["networks"]:
        ratio = network["train_step_ratio_to_baseline"]
        name = "x".join(str(w) for w in network["widths"])
        teachers[name] = {
            "parameters": network["parameters"],
            "train_step_ratio": ratio,
            "hours_fp32": round(epochs * steps * part1["fp32_seconds_per_step"] * ratio / 3600, 1),
            "hours_bf16": round(epochs * steps * part1["bf16_seconds_per_step"] * ratio / 3600, 1),
            "int8_faces_per_second": network["int8_faces_per_second"],
            "distill_hours_bf16": round(
                (student_minutes + TEACHER_VIEWS_MINUTES / network["speed_ratio_to_baseline"]) / 60,
                2,
            ),
        }
    return {"epochs": epochs, "steps_per_epoch": steps, "teachers": teachers}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=PUBLISHED_EPOCHS)
    parser.add_argument("--out", default=str(RESULT), help="JSON record to write")
    args = parser.parse_args(argv)
    recipe, widths = load("recipe_time.json"), load("width_speed.json")
    part3 = load("cnn_cpu_split0_long_recipe_part3.json")
    result = estimate(recipe, widths, part3, args.epochs)
    result["sources"] = {
        "step_seconds": "benchmarks/results/recipe_time.json (part 1, one thread)",
        "width_ratios": "benchmarks/results/width_speed.json (training step, side by side)",
        "distillation": "benchmarks/results/cnn_cpu_split0_long_recipe_part3.json (student "
        "training seconds; teacher views about 25 minutes with shipped-width teachers)",
        "note": "recipe_time and width_speed were measured on different 2-core machines of "
        "this project; the ratios are the portable part. Two runs fit side by side, one per core.",
    }
    for name, t in result["teachers"].items():
        print(
            f"{name}: {t['parameters']:,} weights, {args.epochs} epochs ~ {t['hours_bf16']} h "
            f"(bf16) / {t['hours_fp32']} h (fp32) of one thread; three such teachers distilled "
            f"into the shipped student (part 3) ~ {t['distill_hours_bf16']} h more; a student "
            f"of that width runs {t['int8_faces_per_second']:,.0f} faces/s (int8)"
        )
    print(f"wrote {write_record(args.out, result)}")


if __name__ == "__main__":
    main()
