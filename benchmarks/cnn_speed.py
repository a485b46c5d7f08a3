"""Seconds per training epoch of the CPU CNN config on FER2013, by thread count and data path.

Times ``--batches`` steps after ``--warmup`` steps and extrapolates to a full epoch; per thread
count the four variants are timed side by side (``--rounds`` interleaved rounds). Data paths:
``dataloader`` (a torch Dataset that crops and flips one numpy image at a time, the plain way),
``tensor`` (ferlab's: uint8 images kept in memory as one tensor, augmentation on whole batches),
each without and with ``channels_last``.

    python benchmarks/cnn_speed.py --data /work/shared/data/fer2013-images.tar.gz
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ferlab.data.split import load_splits
from ferlab.deep.augment import normalize, random_warp
from ferlab.deep.model import architecture_from_config, build_cnn
from ferlab.deep.run import image_statistics
from ferlab.settings.cnn import load_cnn_config
from harness import RESULTS, side_by_side, write_record

ROOT = Path(__file__).resolve().parent.parent


class NumpyCrops(torch.utils.data.Dataset):
    """One image at a time: random crop and flip in numpy, standardised (the baseline path)."""

    def __init__(self, images, labels, crop, mean, std, seed) -> None:
        self.images, self.labels, self.crop = images, labels, crop
        self.mean, self.std = mean, std
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        top, left = self.rng.integers(0, 48 - self.crop + 1, 2)
        image = self.images[i, top : top + self.crop, left : left + self.crop]
        if self.rng.random() < 0.5:
            image = image[:, ::-1]
        x = (image.astype(np.float32) - self.mean) / self.std
        return torch.from_numpy(x[None].copy()), int(self.labels[i])


def time_steps(config, splits, mean, std, path, channels_last, warmup, batches) -> float:
    """Seconds per training step of the configured net on one data path."""
    torch.manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    module = build_cnn(architecture_from_config(config.model, 7)).to(memory_format=memory)
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    aug, batch_size = config.augment, config.solver.batch_size
    if path == "dataloader":
        dataset = NumpyCrops(splits.train.images, splits.train.labels, aug.crop, mean, std, 0)
        loader = iter(torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True))
        next_batch = lambda: next(loader)  # noqa: E731
    else:
        images = torch.from_numpy(splits.train.images)
        labels = torch.from_numpy(splits.train.labels)
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(labels), generator=generator)

        def next_batch(step=[0]):  # noqa: B006
            index = order[step[0] * batch_size : (step[0] + 1) * batch_size]
            step[0] += 1
            x = normalize(images[index], mean, std)
            x = random_warp(
                x, aug.crop, flip=aug.flip, rotate=aug.rotate, scale=aug.scale,
                generator=generator,
            )  # fmt: skip
            return x, labels[index]

    started = 0.0
    for step in range(warmup + batches):
        if step == warmup:
            started = time.perf_counter()
        x, y = next_batch()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(module(x), y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 location")
    parser.add_argument(
        "--config", default=str(ROOT / "src" / "ferlab" / "configs" / "fer2013_cnn_cpu.toml")
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds per thread count")
    parser.add_argument("--out", default=str(RESULTS / "cnn_speed.json"))
    args = parser.parse_args()

    config = load_cnn_config(args.config, data_path=args.data)
    splits = load_splits(config)
    mean, std = image_statistics(splits.train.images)
    steps_per_epoch = len(splits.train) // config.solver.batch_size
    load_before = os.getloadavg()
    rows, timings = [], {}
    variants = {f"{path}{' channels_last' * last}": (path, last)
                for path in ("dataloader", "tensor") for last in (False, True)}  # fmt: skip
    for threads in args.threads:
        torch.set_num_threads(threads)
        timing = side_by_side(
            {
                name: lambda path=path, last=last: time_steps(
                    config, splits, mean, std, path, last, args.warmup, args.batches
                )
                for name, (path, last) in variants.items()
            },
            args.rounds,
            warmup=0,  # time_steps warms up itself
            self_timed=True,
        )
        timings[f"{threads} threads"] = timing.record()
        for name, (path, channels_last) in variants.items():
            seconds = timing.medians[name]
            row = {
                "threads": threads,
                "data_path": path,
                "channels_last": channels_last,
                "seconds_per_step": round(seconds, 4),
                "seconds_per_epoch": round(seconds * steps_per_epoch, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "what": "seconds per training epoch of the CPU CNN config on FER2013 (extrapolated)",
        "config": Path(args.config).name,
        "model": config.model.model_dump(),
        "crop": config.augment.crop,
        "batch_size": config.solver.batch_size,
        "n_train": len(splits.train),
        "steps_per_epoch": steps_per_epoch,
        "timed_batches": args.batches,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "note": "shared 2-core machine: other processes ran at the same time (see load average)",
        "rows": rows,
        "side_by_side": timings,
    }
    write_record(args.out, result)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
