"""The benchmarks' shared harness: one description of the machine, timing side by side, one record.

Every script here runs as ``python benchmarks/X.py`` (Python then puts ``benchmarks/`` on
``sys.path``) and imports ``from harness import machine, side_by_side, write_record``; tests put
``benchmarks/`` on ``sys.path`` the same way.

- :func:`machine` describes the machine a figure was measured on, the same way in every record.
- :func:`side_by_side` times alternatives in one run, interleaved: the machine is shared and
  noisy, so what a benchmark claims is the ratio of medians measured side by side; absolute
  seconds depend on the load of the moment.
- :func:`write_record` writes a JSON record (under ``benchmarks/results/``) atomically, with the
  command line, the machine and the time added: a failed run leaves the previous record whole.

Example::

    timing = side_by_side({"numpy": run_numpy, "torch": run_torch}, repeats=5, baseline="numpy")
    print("\\n".join(timing.lines()))
    write_record(RESULTS / "x.json", {"what": "...", **timing.record()})
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Library versions, when installed: (module imported, distributions that provide it).
LIBRARIES = {
    "numpy": ("numpy", ("numpy",)),
    "onnxruntime": ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    "opencv": ("cv2", ("opencv-python-headless", "opencv-python", "opencv-contrib-python")),
    "torch": ("torch", ("torch",)),
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# The keys write_record adds to a record (never over a key the record already has).
STAMP_KEYS = ("command", "recorded_by", "machine", "recorded_at")


def cpu_description(cpuinfo: str, fallback: str) -> dict:
    """The CPU's model name, its int8 dot-product extensions (ONNX Runtime's int8 kernels are
    several times faster with VNNI) and its bfloat16 ones (PyTorch's bfloat16 training with
    AMX), read from the text of ``/proc/cpuinfo``."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())  # the first processor's
    flags = set(fields.get("flags", "").split())
    model = " ".join(fields.get("model name", "").split())
    return {
        "model": model or fallback,
        "int8_extensions": sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}),
        "bf16_extensions": sorted(flags & {"avx512_bf16", "amx_bf16"}),
    }


def this_cpu() -> dict:
    """``cpu_description`` of the machine this runs on."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    return cpu_description(text, platform.processor() or platform.machine())


def library_version(module: str, distributions: tuple[str, ...]) -> str | None:
    """The version of ``module`` if it is imported, else of the first installed distribution
    providing it, else None. Never imports the module (importing torch takes seconds)."""
    if module in sys.modules:
        version = getattr(sys.modules[module], "__version__", None)
        if version:
            return str(version)
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def thread_settings() -> dict:
    """The thread settings in force: the usual environment variables, the thread counts of
    PyTorch and OpenCV when they are imported, and the native thread pools (BLAS, OpenMP) that
    are loaded, as threadpoolctl sees them."""
    settings: dict = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    if "torch" in sys.modules:
        settings["torch"] = sys.modules["torch"].get_num_threads()
    if "cv2" in sys.modules:
        settings["opencv"] = sys.modules["cv2"].getNumThreads()
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return settings
    settings["pools"] = [
        {key: pool.get(key) for key in ("internal_api", "num_threads", "version")}
        for pool in threadpool_info()
    ]
    return settings


def ferlab_source() -> tuple[str | None, Path | None]:
    """The version of the ferlab that ``import ferlab`` finds and its folder (which may be
    another checkout's, under ``PYTHONPATH``), or (None, None) when none is importable."""
    try:
        import ferlab
    except ImportError:
        return None, None
    return getattr(ferlab, "__version__", None), Path(ferlab.__file__).resolve().parent


def git_state(folder: Path | None) -> dict:
    """The commit checked out in the git tree holding ``folder`` and whether tracked files
    differ from it; None values outside a git tree."""
    state: dict = {"commit": None, "uncommitted_changes": None}
    if folder is None:
        return state

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()

    try:
        state["commit"] = git("rev-parse", "HEAD")
        state["uncommitted_changes"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    return state


def machine() -> dict:
    """One description of this machine and software, the same in every record.

    Keys: ``platform``, ``arch``, ``host``, ``cpu`` (model and int8/bfloat16 extensions),
    ``cpus`` (logical CPUs) and ``usable_cpus`` (those this process may run on), ``load_average``
    (1, 5, 15 minutes), ``python``, ``versions`` (numpy, onnxruntime, opencv, torch; None when
    not installed), ``threads`` (see :func:`thread_settings`), ``ferlab`` (the imported
    version), ``commit`` and ``uncommitted_changes`` (of the git tree ferlab was imported from).
    """
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    version, folder = ferlab_source()
    return {
        "platform": platform.platform(),
        "arch": platform.machine(),
        "host": platform.node(),
        "cpu": this_cpu(),
        "cpus": os.cpu_count(),
        "usable_cpus": len(usable) if usable is not None else os.cpu_count(),
        "load_average": [round(v, 2) for v in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "python": platform.python_version(),
        "versions": {name: library_version(*where) for name, where in LIBRARIES.items()},
        "threads": thread_settings(),
        "ferlab": version,
        **git_state(folder),
    }


@dataclass(frozen=True)
class SideBySide:
    """Seconds of each candidate over interleaved rounds (``seconds[name][r]``: round r), the
    baseline the ratios are taken to, and ``order``: the names of the timed calls as made."""

    seconds: dict[str, list[float]]
    baseline: str
    order: tuple[str, ...]

    @property
    def medians(self) -> dict[str, float]:
        """Median seconds of each candidate."""
        return {name: statistics.median(values) for name, values in self.seconds.items()}

    @property
    def ratios(self) -> dict[str, float]:
        """Each candidate's median seconds over the baseline's (below 1: faster)."""
        base = self.medians[self.baseline]
        return {name: median / base for name, median in self.medians.items()}

    @property
    def paired_ratios(self) -> dict[str, float]:
        """The median over rounds of each candidate's seconds over the baseline's in the same
        round: less moved by load that changes between rounds than ``ratios``."""
        base = self.seconds[self.baseline]
        return {
            name: statistics.median(v / b for v, b in zip(values, base, strict=True))
            for name, values in self.seconds.items()
        }

    def record(self, digits: int = 4) -> dict:
        """The timing as a record's part: rounds, baseline, seconds, medians and both ratios."""
        return {
            "rounds": len(self.seconds[self.baseline]),
            "baseline": self.baseline,
            "seconds": {k: [round(s, digits) for s in v] for k, v in self.seconds.items()},
            "median_seconds": {k: round(v, digits) for k, v in self.medians.items()},
            "ratio_to_baseline": {k: round(v, digits) for k, v in self.ratios.items()},
            "paired_ratio_to_baseline": {
                k: round(v, digits) for k, v in self.paired_ratios.items()
            },
        }

    def lines(self) -> list[str]:
        """One printable line per candidate: median seconds and ratio to the baseline."""
        width = max(len(name) for name in self.seconds)
        return [
            f"{name:{width}s}  median {self.medians[name]:.4g} s  "
            f"{self.ratios[name]:.3f}x {self.baseline} (paired {self.paired_ratios[name]:.3f}x)"
            for name in self.seconds
        ]


def side_by_side(
    candidates: Mapping[str, Callable[[], object]],
    repeats: int = 5,
    *,
    baseline: str | None = None,
    warmup: int = 1,
    self_timed: bool = False,
    progress: bool = False,
) -> SideBySide:
    """Time ``candidates`` (name -> callable without arguments) in ``repeats`` interleaved rounds.

    Each round calls every candidate once, the order rotated by one from round to round (no
    candidate always runs first, after a pause, or last), after ``warmup`` untimed calls of each.
    ``self_timed``: each call returns its own seconds (a float), e.g. to leave its setup out;
    otherwise the whole call is timed. ``baseline`` (default: the first candidate) is what the
    ratios are taken to. ``progress`` prints each timed call to stderr.
    """
    names = list(candidates)
    if not names or repeats < 1:
        raise ValueError("side_by_side needs at least one candidate and one round")
    baseline = names[0] if baseline is None else baseline
    if baseline not in candidates:
        raise ValueError(f"baseline {baseline!r} is not one of the candidates {names}")

    def timed(name: str) -> float:
        started = time.perf_counter()
        result = candidates[name]()
        seconds = time.perf_counter() - started
        return float(result) if self_timed else seconds

    for _ in range(warmup):
        for name in names:
            timed(name)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    order = []
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(timed(name))
            order.append(name)
            if progress:
                print(
                    f"round {repeat + 1}/{repeats}  {name}  {seconds[name][-1]:.4g} s",
                    file=sys.stderr,
                    flush=True,
                )
    return SideBySide(seconds, baseline, tuple(order))


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran, as ``python benchmarks/X.py ARGS`` (the script's path relative to
    the repository when it is inside it), quoted for a shell."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]) if argv and argv[0] else Path("-")
    try:
        shown = script.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        shown = str(script)
    return shlex.join(["python", shown, *argv[1:]])


def stamped(record: Mapping, argv: list[str] | None = None) -> dict:
    """``record`` with the command line, the machine and the time (UTC) added, never over a key
    it has: ``command`` (the command line, unless the record names its own, e.g. the training
    command it records; then the command line is ``recorded_by``), ``machine`` and
    ``recorded_at``."""
    line = command_line(argv)
    stamp = {"command": line, "machine": machine(), "recorded_at": utc_now()}
    out = {**stamp, **record}  # the record's own keys win; the stamp's come first in the file
    if out["command"] != line:
        out.setdefault("recorded_by", line)
    return out


def utc_now() -> str:
    """The time now in UTC, as 2026-12-07T14:05:09Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def atomic_files():
    """ferlab's one atomic writer (``ferlab.common.files``); this checkout's copy of it when the
    ferlab imported is an older one without it (a before/after run under ``PYTHONPATH``)."""
    try:
        from ferlab.common import files
    except ImportError:
        spec = importlib.util.spec_from_file_location(
            "ferlab_files_of_this_checkout", ROOT / "src" / "ferlab" / "common" / "files.py"
        )
        files = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(files)  # it imports nothing of ferlab
    return files


def write_record(path: str | os.PathLike, record: Mapping, *, stamp: bool = True) -> Path:
    """Write ``record`` as indented JSON to ``path`` atomically, :func:`stamped` unless
    ``stamp`` is False (a file of several records, each stamped itself); return the path.

    The JSON text is made before any file is opened, then written through ferlab's atomic
    writer (a temporary file beside ``path``, renamed over it): a record JSON cannot hold, a
    full disk or Ctrl-C leaves the previous file as it was and no temporary file. Missing
    folders are made.
    """
    text = json.dumps(stamped(record) if stamp else dict(record), indent=2) + "\n"
    return atomic_files().write_text_atomic(path, text)
