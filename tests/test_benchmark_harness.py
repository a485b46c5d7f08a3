"""The benchmarks' shared harness (benchmarks/harness.py): machine, side_by_side, write_record."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import harness  # noqa: E402


def test_machine_describes_the_platform_cpu_libraries_threads_and_checkout():
    described = harness.machine()
    assert described["platform"] == platform.platform()
    assert described["python"] == platform.python_version()
    assert described["cpus"] == os.cpu_count() and 1 <= described["usable_cpus"] <= os.cpu_count()
    assert described["cpu"]["model"] and isinstance(described["cpu"]["int8_extensions"], list)
    assert len(described["load_average"]) == 3
    assert set(described["versions"]) == {"numpy", "onnxruntime", "opencv", "torch"}
    assert described["versions"]["numpy"] == np.__version__
    assert set(harness.THREAD_VARIABLES) <= set(described["threads"])
    import ferlab

    assert described["ferlab"] == ferlab.__version__
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)  # fmt: skip
    if head.returncode == 0:  # a git checkout (not an unpacked source archive)
        assert described["commit"] == head.stdout.strip()
        assert isinstance(described["uncommitted_changes"], bool)
    json.dumps(described)  # a record can hold it


def test_a_library_that_is_not_installed_has_no_version():
    assert harness.library_version("no_such_module_here", ("no-such-distribution",)) is None


def test_the_cpu_is_read_from_cpuinfo_text():
    text = "processor\t: 0\nmodel name\t: AMD  EPYC 9B14\nflags\t\t: fpu avx512_vnni avx512_bf16\n"
    described = harness.cpu_description(text, "x86_64")
    assert described == {"model": "AMD EPYC 9B14", "int8_extensions": ["avx512_vnni"],
                         "bf16_extensions": ["avx512_bf16"]}  # fmt: skip
    assert harness.cpu_description("", "x86_64")["model"] == "x86_64"


def test_side_by_side_orders_and_ratios_candidates_and_interleaves_them():
    calls: list[str] = []

    def sleeper(name: str, seconds: float):
        def run():
            calls.append(name)
            time.sleep(seconds)

        return run

    timing = harness.side_by_side(
        {"fast": sleeper("fast", 0.01), "slow": sleeper("slow", 0.03)}, repeats=4, warmup=1
    )
    assert timing.baseline == "fast"
    assert timing.medians["fast"] < timing.medians["slow"]
    assert timing.ratios["fast"] == 1.0
    assert 2.0 < timing.ratios["slow"] < 4.0  # 3 in theory; a wide margin for a busy machine
    assert 2.0 < timing.paired_ratios["slow"] < 4.0
    # one untimed warm-up call each, then every round calls each once, in a rotated order
    assert calls == ["fast", "slow", "fast", "slow", "slow", "fast", "fast", "slow", "slow", "fast"]
    assert list(timing.order) == calls[2:]
    assert [len(v) for v in timing.seconds.values()] == [4, 4]
    record = timing.record()
    assert record["rounds"] == 4 and record["baseline"] == "fast"
    assert record["ratio_to_baseline"]["slow"] == round(timing.ratios["slow"], 4)
    assert len(timing.lines()) == 2 and "slow" in timing.lines()[1]


def test_side_by_side_takes_a_named_baseline_and_self_timed_candidates():
    timing = harness.side_by_side(
        {"a": lambda: 2.0, "b": lambda: 1.0, "c": lambda: 4.0},
        repeats=3,
        baseline="b",
        warmup=0,
        self_timed=True,
    )
    assert timing.seconds == {"a": [2.0] * 3, "b": [1.0] * 3, "c": [4.0] * 3}
    assert timing.ratios == {"a": 2.0, "b": 1.0, "c": 4.0}
    assert timing.order == ("a", "b", "c", "b", "c", "a", "c", "a", "b")
    with pytest.raises(ValueError, match="baseline 'd'"):
        harness.side_by_side({"a": lambda: 1.0}, baseline="d")


def test_write_record_adds_the_command_machine_and_time(tmp_path):
    target = tmp_path / "results" / "x.json"  # a missing folder is made
    argv = [str(ROOT / "benchmarks" / "x.py"), "--quick", "--out", "a b"]
    record = harness.stamped({"figure": 1.5}, argv)
    assert record["command"] == "python benchmarks/x.py --quick --out 'a b'"
    assert "recorded_by" not in record and record["machine"]["cpus"] == os.cpu_count()
    assert record["recorded_at"].endswith("Z")
    harness.write_record(target, {"figure": 1.5, "machine": "kept"})
    written = json.loads(target.read_text())
    assert written["figure"] == 1.5 and written["machine"] == "kept"  # never over a given key
    assert set(harness.STAMP_KEYS) - {"recorded_by"} <= set(written)
    own = harness.stamped({"command": "ferlab cnn train ..."}, argv)
    assert own["command"] == "ferlab cnn train ..." and own["recorded_by"].startswith("python ")
    harness.write_record(target, {"only": 1}, stamp=False)
    assert json.loads(target.read_text()) == {"only": 1}


def test_a_record_that_fails_to_serialise_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.json"
    harness.write_record(target, {"figure": 1})
    before = target.read_bytes()
    with pytest.raises(TypeError):
        harness.write_record(target, {"figure": object()})
    assert target.read_bytes() == before
    with pytest.raises(TypeError):
        harness.write_record(tmp_path / "new.json", {"figure": {1, 2}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_a_write_that_fails_midway_removes_its_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    harness.write_record(target, {"figure": 1})

    def no_rename(source, destination):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk gone"):
        harness.write_record(target, {"figure": 2})
    assert json.loads(target.read_text())["figure"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# Every script that writes a record, all through write_record (real_photos.py is a library of
# photos; release/ship_model.py, apart from benchmarks, writes the model card and its copy).
RECORDING_SCRIPTS = [
    "archive_integrity", "cnn_record", "cnn_speed", "detector_photos", "driver_throughput",
    "engine_speed", "fer_package", "fuzz_readers", "pipeline_accuracy", "recipe_time",
    "recognizer_speed", "search_record", "search_simulation", "search_throughput", "serve_load",
    "serve_slow_clients", "teacher_speed", "tta_calibration", "validation_leak", "width_speed",
]  # fmt: skip


def test_every_recording_script_imports_with_the_harness_and_writes_through_it():
    """Imported as ``python benchmarks/X.py`` imports them (``benchmarks/`` first on sys.path),
    from the repository root, in one interpreter; and none writes its record another way."""
    code = (
        "import importlib, sys; sys.path.insert(0, 'benchmarks'); "
        f"[importlib.import_module(name) for name in {RECORDING_SCRIPTS!r}]"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for name in RECORDING_SCRIPTS:
        text = (ROOT / "benchmarks" / f"{name}.py").read_text(encoding="utf-8")
        assert "write_record(" in text, f"{name}.py writes no record through the harness"
        assert ".write_text(json.dumps" not in text and "platform.platform()" not in text, name


def test_a_script_runs_from_the_repository_root():
    """As the Makefile and the docs run them: ``python benchmarks/X.py``."""
    done = subprocess.run([sys.executable, "benchmarks/engine_speed.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--repeats" in done.stdout


def test_the_writer_is_this_checkouts_when_the_imported_ferlab_has_none(tmp_path, monkeypatch):
    """A before/after run imports an older ferlab (``PYTHONPATH=OLD/src``) without
    ferlab.common.files."""
    import ferlab.common

    monkeypatch.setitem(sys.modules, "ferlab.common.files", None)  # importing it now fails
    monkeypatch.delattr(ferlab.common, "files", raising=False)
    with pytest.raises(ImportError):
        from ferlab.common import files  # noqa: F401
    files = harness.atomic_files()
    assert files.__name__ == "ferlab_files_of_this_checkout"
    assert Path(files.__file__) == ROOT / "src" / "ferlab" / "common" / "files.py"
    harness.write_record(tmp_path / "x.json", {"figure": 1}, stamp=False)
    assert json.loads((tmp_path / "x.json").read_text()) == {"figure": 1}
