"""What the shipped CNN's CPU recipe costs in float32 and in bfloat16 (``device.cpu_bf16``).

Each part of the recipe (its config, teachers and epochs as committed) trains ``--steps`` real
steps on FER2013 through ferlab's trainer on one thread, in float32 and in bfloat16 side by
side, in interleaved rounds (the machine is shared and noisy); one validation pass is timed
too. A part's epoch is its median step time times the steps of an epoch plus a validation pass.
The recipe's machine time adds every part's epochs, parts 1-3 three times (the three teachers)
and part 4 once, each run on one thread and three side by side on the 2 cores, so the whole
machine's time is the sum over runs divided by 2. The weights are seeded random ones: speed does
not depend on their values. Writes ``benchmarks/results/recipe_time.json``.

    python benchmarks/recipe_time.py --data ../shared/data/fer2013-images.tar.gz
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from ferlab.data.split import load_splits
from ferlab.deep.distillation import load_teachers
from ferlab.deep.model import architecture_from_config, build_cnn
from ferlab.deep.run import image_statistics
from ferlab.deep.trainer import CNNTrainer, TensorData
from ferlab.settings import CNNSettings
from ferlab.settings.cnn import load_cnn_config
from ferlab.settings.loading import with_values
from harness import RESULTS, side_by_side, this_cpu, write_record

ROOT = Path(__file__).resolve().parent.parent
RESULT = RESULTS / "recipe_time.json"
# (part, config, runs in the recipe): parts 1-3 make each of the three teachers; part 4 is the
# shipped student; the widened student is a tried fifth part, timed for comparison.
PARTS = [
    ("1 ema_erase", "fer2013_cnn_cpu_ema_erase.toml", 3),
    ("2 restart", "fer2013_cnn_cpu_restart.toml", 3),
    ("3 selfdistill", "fer2013_cnn_cpu_selfdistill.toml", 3),
    ("4 ensemble_distill", "fer2013_cnn_cpu_ensemble_distill.toml", 1),
    ("widen (not in the recipe)", "fer2013_cnn_cpu_widen.toml", 0),
]
CORES = 2


def part_trainer(config: CNNSettings, splits, bf16: bool) -> CNNTrainer:
    """A trainer of ``config``'s network and teachers on ``splits``, from seeded weights."""
    config = with_values(config, {"device.cpu_bf16": bf16})
    device = torch.device("cpu")
    torch.manual_seed(0)
    module = build_cnn(architecture_from_config(config.model, len(splits.class_names)))
    mean, std = image_statistics(splits.train.images)
    data = TensorData.from_arrays(
        splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, device
    )
    teachers = load_teachers(config.distill.teacher, device, splits.class_names)
    return CNNTrainer(
        config, module, data, mean, std, device=device, verbose=False, teachers=teachers
    )


def time_part(trainer: CNNTrainer, warmup: int, steps: int) -> tuple[float, float]:
    """Seconds per training step (after ``warmup`` steps) and seconds of one validation pass."""
    trainer.steps_per_epoch = warmup
    trainer.train_epoch()
    trainer.steps_per_epoch = steps
    started = time.perf_counter()
    trainer.train_epoch()
    step = (time.perf_counter() - started) / steps
    started = time.perf_counter()
    trainer.evaluate(trainer.data.val_images, trainer.data.val_labels)
    return step, time.perf_counter() - started


def step_timing_arguments(doc: str, result: Path) -> argparse.Namespace:
    """The command line of a benchmark that times training steps in rounds, parsed."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 location")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(result))
    return parser.parse_args()


def main() -> None:
    args = step_timing_arguments(__doc__, RESULT)
    torch.set_num_threads(1)

    configs = {
        part: load_cnn_config(ROOT / "src" / "ferlab" / "configs" / name, data_path=args.data)
        for part, name, _ in PARTS
    }
    splits = load_splits(next(iter(configs.values())))
    steps_per_epoch = len(splits.train) // next(iter(configs.values())).solver.batch_size
    trainers = {
        (part, bf16): part_trainer(config, splits, bf16)
        for part, config in configs.items()
        for bf16 in (False, True)
    }
    validation: dict[tuple, list[float]] = {key: [] for key in trainers}

    def timed(key: tuple):
        def run() -> float:  # seconds per step; the validation pass's seconds kept aside
            step, seconds = time_part(trainers[key], args.warmup, args.steps)
            validation[key].append(seconds)
            return step

        return run

    names = {key: f"{key[0]} {'bf16' if key[1] else 'fp32'}" for key in trainers}
    timing = side_by_side(
        {names[key]: timed(key) for key in trainers},
        args.rounds,
        warmup=0,  # time_part warms up itself
        self_timed=True,
        progress=True,
    )
    times = {
        key: list(zip(timing.seconds[names[key]], validation[key], strict=True)) for key in trainers
    }

    rows, totals = [], {False: 0.0, True: 0.0}
    for part, name, runs in PARTS:
        epochs = configs[part]["solver"]["epochs"]
        row = {"part": part, "config": name, "runs_in_recipe": runs, "epochs": epochs}
        for bf16 in (False, True):
            step = statistics.median(t[0] for t in times[(part, bf16)])
            validation = statistics.median(t[1] for t in times[(part, bf16)])
            epoch = step * steps_per_epoch + validation
            label = "bf16" if bf16 else "fp32"
            row[f"{label}_seconds_per_step"] = round(step, 4)
            row[f"{label}_seconds_per_epoch"] = round(epoch, 1)
            row[f"{label}_run_minutes"] = round(epoch * epochs / 60, 1)
            totals[bf16] += runs * epoch * epochs
        row["bf16_speedup"] = round(
            row["fp32_seconds_per_epoch"] / row["bf16_seconds_per_epoch"], 2
        )
        rows.append(row)
        print(
            f"{part:28s} {epochs:3d} epochs  fp32 {row['fp32_seconds_per_epoch']:7.1f} s/epoch  "
            f"bf16 {row['bf16_seconds_per_epoch']:7.1f} s/epoch  ({row['bf16_speedup']:.2f}x)"
        )
    hours = {bf16: round(total / CORES / 3600, 2) for bf16, total in totals.items()}
    print(
        f"the recipe (parts 1-3 x 3 teachers, part 4 once): {hours[False]} h of this machine in "
        f"float32, {hours[True]} h in bfloat16 ({hours[False] / hours[True]:.2f}x)"
    )
    record = {
        "what": "machine time of the shipped CNN's CPU recipe, float32 against bfloat16 "
        "(device.cpu_bf16), from timed steps of each part",
        "cpu": this_cpu(),
        "torch": torch.__version__,
        "threads_per_run": 1,
        "cores": CORES,
        "steps_per_epoch": steps_per_epoch,
        "timed_steps_per_round": args.steps,
        "rounds": args.rounds,
        "parts": rows,
        "recipe_machine_hours": {"fp32": hours[False], "bf16": hours[True]},
        "note": "runs on one thread each, three side by side on the 2 cores: machine time is "
        "the sum of the runs' times over 2. Estimated from timed steps, not from whole runs.",
        "side_by_side": timing.record(),
    }
    write_record(args.out, record)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
