"""One training epoch of a 2304-457-7 net: ferlab's engine vs PyTorch (CPU) vs scikit-learn.

Synthetic data of FER2013's shape (28,709 rows of 48x48), batch 160, float32, SGD with momentum 0.9,
the same thread count for every library. Runs are interleaved and repeated because the machine is
shared and noisy; prints medians and ratios and writes ``benchmarks/results/engine_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROWS, FEATURES, HIDDEN, CLASSES, BATCH = 28_709, 48 * 48, 457, 7, 160
LR, MOMENTUM = 1e-3, 0.9
RESULT = Path(__file__).parent / "results" / "engine_speed.json"


def synthetic_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((ROWS, FEATURES), dtype=np.float32), rng.integers(0, CLASSES, ROWS)


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
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    X, y = synthetic_data()
    runners = {"engine": time_engine, "pytorch": time_torch}
    if not args.no_sklearn:
        runners["sklearn"] = time_sklearn
    times: dict[str, list[float]] = {name: [] for name in runners}
    with threadpool_limits(limits=args.threads):
        for run in runners.values():  # warm-up: first-call costs are not per-epoch costs
            run(X[: BATCH * 4], y[: BATCH * 4])
        for repeat in range(args.repeats):
            for name, run in runners.items():
                times[name].append(run(X, y))
                print(
                    f"repeat {repeat + 1}/{args.repeats}  {name:8s} {times[name][-1]:.2f} s",
                    file=sys.stderr,
                )
        blas = [
            {k: info.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
            for info in threadpool_info()
        ]
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        f"engine/{name}": medians["engine"] / medians[name] for name in medians if name != "engine"
    }
    record = {
        "benchmark": "one epoch, 2304-457-7, batch 160, float32, SGD momentum 0.9",
        "rows": ROWS,
        "threads": args.threads,
        "repeats": args.repeats,
        "seconds": times,
        "median_seconds": medians,
        "ratios": ratios,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "blas": blas,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(record, indent=2) + "\n")
    for name, value in medians.items():
        print(f"{name:8s} median {value:.2f} s/epoch")
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    print(f"written {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
