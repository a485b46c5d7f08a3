"""What the distillation teachers cost, run by PyTorch against ONNX Runtime, in float32 on the CPU.

The shipped CNN's last recipe part (the shipped config ``fer2013_cnn_cpu_short_distill``: three
teachers, each on the batch and its mirror image) trains ``--steps`` real steps on FER2013
through ferlab's trainer on one thread, its teachers run by PyTorch and by ONNX Runtime (the
trainer's default in float32 on the CPU), side by side in interleaved rounds (the machine is
shared and noisy), with the same part without teachers as the floor. Also checks that both
runtimes give the same teacher logits. Writes ``benchmarks/results/teacher_speed.json``.

    python benchmarks/teacher_speed.py --data ../shared/data/fer2013-images.tar.gz
"""

from __future__ import annotations

from pathlib import Path

import torch

from ferlab.data.split import load_splits
from ferlab.deep.augment import center_crop, normalize
from ferlab.settings.cnn import load_cnn_config
from ferlab.settings.loading import with_values
from harness import RESULTS, side_by_side, this_cpu, write_record
from recipe_time import part_trainer, step_timing_arguments, time_part

ROOT = Path(__file__).resolve().parent.parent
RESULT = RESULTS / "teacher_speed.json"
CONFIG = "fer2013_cnn_cpu_short_distill.toml"
VARIANTS = ("no teachers", "teachers in PyTorch", "teachers in ONNX Runtime")


def trainers(config, splits) -> dict:
    """A trainer per variant, from the same seeded weights."""
    plain = part_trainer(with_values(config, {"distill.teacher": []}), splits, False)
    torch_teachers = part_trainer(config, splits, False)
    torch_teachers.teacher_runtime = "torch"
    onnx_teachers = part_trainer(config, splits, False)
    assert onnx_teachers.teacher_runtime == "onnxruntime"
    return dict(zip(VARIANTS, (plain, torch_teachers, onnx_teachers), strict=True))


def largest_logit_difference(first, second) -> float:
    """The largest difference between two trainers' teacher logits on 256 validation faces."""
    images = first.data.val_images[:256]
    x = center_crop(normalize(images, first.mean, first.std), first.augment.crop)
    with torch.no_grad():
        return float((first.teacher_logits(x) - second.teacher_logits(x)).abs().max())


def main() -> None:
    args = step_timing_arguments(__doc__, RESULT)
    torch.set_num_threads(1)

    config = load_cnn_config(ROOT / "src" / "ferlab" / "configs" / CONFIG, data_path=args.data)
    splits = load_splits(config)
    runs = trainers(config, splits)
    timing = side_by_side(
        {variant: lambda t=trainer: time_part(t, args.warmup, args.steps)[0]
         for variant, trainer in runs.items()},
        args.rounds,
        warmup=0,  # time_part warms up itself
        self_timed=True,  # seconds per step
        progress=True,
    )  # fmt: skip
    step = timing.medians
    floor = step["no teachers"]
    teachers = {variant: step[variant] - floor for variant in VARIANTS[1:]}
    for variant in VARIANTS:
        print(f"{variant:26s} {step[variant]:.3f} s per step")
    speedup = step["teachers in PyTorch"] / step["teachers in ONNX Runtime"]
    teacher_speedup = teachers["teachers in PyTorch"] / teachers["teachers in ONNX Runtime"]
    difference = largest_logit_difference(runs[VARIANTS[1]], runs[VARIANTS[2]])
    print(
        f"distillation step {speedup:.2f}x faster with ONNX Runtime teachers (their own time "
        f"{teacher_speedup:.2f}x); largest teacher logit difference {difference:.1e}"
    )
    record = {
        "what": "seconds per distillation training step of the short_distill part (3 teachers, "
        "flip), teachers run by PyTorch against ONNX Runtime, float32, one thread",
        "cpu": this_cpu(),
        "torch": torch.__version__,
        "config": CONFIG,
        "batch_size": config.solver.batch_size,
        "timed_steps_per_round": args.steps,
        "rounds": args.rounds,
        "seconds_per_step": {variant: round(step[variant], 4) for variant in VARIANTS},
        "teacher_seconds_per_step": {k: round(v, 4) for k, v in teachers.items()},
        "step_speedup": round(speedup, 2),
        "teacher_speedup": round(teacher_speedup, 2),
        "largest_teacher_logit_difference": difference,
        "side_by_side": timing.record(),
    }
    write_record(args.out, record)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
