"""One training epoch of a 2304-457-7 net: ferlab's engine vs PyTorch (CPU) vs scikit-learn.

Synthetic data of FER2013's shape (28,709 rows of 48x48), batch 160, float32, SGD with momentum 0.9,
the same thread count for every library. Runs are interleaved and repeated because the machine is
shared and noisy; prints medians and ratios and writes ``benchmarks/results/engine_speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from harness import RESULTS, side_by_side, write_record

ROWS, FEATURES, HIDDEN, CLASSES, BATCH = 28_709, 48 * 48, 457, 7, 160
LR, MOMENTUM = 1e-3, 0.9
RESULT = RESULTS / "engine_speed.json"


def synthetic_data(seed: int = 0, rows: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (rows, 2304) float32 and labels (rows,) in [0, 7)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, FEATURES), dtype=np.float32), rng.integers(0, CLASSES, rows)


def time_engine(X: np.ndarray, y: np.ndarray) -> float:
    from ferlab.nn import FullyConnectedNet, Solver

    model = FullyConnectedNet(FEATURES, [HIDDEN], CLASSES, seed=0)
    data = {"X_train": X, "y_train": y, "X_val": X[:BATCH], "y_val": y[:BATCH]}
    solver = Solver(
        model,
        data,
        optimizer="sgd_momentum",
        lr=LR,
        momentum=MOMENTUM,
        batch_size=BATCH,
        epochs=1,
        verbose=False,
    )
    started = time.perf_counter()
    solver.train()
    return time.perf_counter() - started


def time_torch(X: np.ndarray, y: np.ndarray) -> float:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    )
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    started = time.perf_counter()
    rows = len(X)
    order = torch.randperm(rows)
    for start in range(0, rows, BATCH):
        idx = order[start : start + BATCH]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(X_t[idx]), y_t[idx])
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def time_sklearn(X: np.ndarray, y: np.ndarray) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,), solver="sgd", learning_rate_init=LR, momentum=MOMENTUM,
        nesterovs_momentum=False, batch_size=BATCH, max_iter=1, alpha=0.0, shuffle=True,
        random_state=0, tol=0.0,
    )  # fmt: skip
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sklearn", action="store_true", help="skip the slow scikit-learn runs")
    parser.add_argument(
        "--rows", type=int, default=ROWS, help="rows of synthetic data (quick runs)"
    )
    parser.add_argument("--out", default=str(RESULT), help="JSON record to write")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    X, y = synthetic_data(rows=args.rows)
    runners = {"engine": time_engine, "pytorch": time_torch}
    if not args.no_sklearn:
        runners["sklearn"] = time_sklearn
    with threadpool_limits(limits=args.threads):
        for run in runners.values():  # warm-up: first-call costs are not per-epoch costs
            run(X[: BATCH * 4], y[: BATCH * 4])
        timing = side_by_side(
            {name: (lambda run=run: run(X, y)) for name, run in runners.items()},
            args.repeats,
            baseline="engine",
            warmup=0,
            self_timed=True,  # each runner times its epoch, without building the model
            progress=True,
        )
        blas = [
            {k: info.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
            for info in threadpool_info()
        ]
    medians = timing.medians
    ratios = {f"engine/{name}": 1 / timing.ratios[name] for name in medians if name != "engine"}
    record = {
        "benchmark": "one epoch, 2304-457-7, batch 160, float32, SGD momentum 0.9",
        "rows": args.rows,
        "threads": args.threads,
        "repeats": args.repeats,
        "seconds": timing.seconds,
        "median_seconds": medians,
        "ratios": ratios,
        "side_by_side": timing.record(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "blas": blas,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_record(args.out, record)
    for name, value in medians.items():
        print(f"{name:8s} median {value:.2f} s/epoch")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
