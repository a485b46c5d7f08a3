"""Importing ferlab, any of its modules, changes no global state (the CLI sets what it needs)."""

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ferlab"
MODULES = sorted(
    ".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in SRC.rglob("*.py")
    if p.name != "__main__.py"
)

SCRIPT = """
import importlib, logging, sys, warnings
import numpy, scipy, sklearn, PIL.Image, matplotlib, optuna, tqdm  # their own import-time setup
import torch, cv2, onnxruntime, dask.distributed  # noqa: F401
filters = list(warnings.filters)
backend = matplotlib.rcParams._get_backend_or_none()
verbosity = optuna.logging.get_verbosity()
root_handlers = list(logging.getLogger().handlers)
threads = (torch.get_num_threads(), cv2.getNumThreads())
show = warnings.showwarning
for name in sys.argv[1:]:
    importlib.import_module(name)
import ferlab
ferlab.EmotionRecognizer, ferlab.load_model  # the lazy attributes too
problems = []
if list(warnings.filters) != filters: problems.append("warning filters")
if warnings.showwarning is not show: problems.append("warnings.showwarning")
if matplotlib.rcParams._get_backend_or_none() != backend: problems.append("matplotlib backend")
if "matplotlib.pyplot" in sys.modules: problems.append("pyplot imported")
if optuna.logging.get_verbosity() != verbosity: problems.append("optuna logging")
if list(logging.getLogger().handlers) != root_handlers: problems.append("root logging handlers")
if (torch.get_num_threads(), cv2.getNumThreads()) != threads: problems.append("thread counts")
print("changed: " + ", ".join(problems) if problems else "ok")
"""


def test_importing_every_module_changes_no_global_state():
    assert "ferlab.cli" in MODULES and "ferlab.vision.recognizer" in MODULES
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *MODULES], capture_output=True, text=True, timeout=240
    )
    assert done.stdout.strip() == "ok", done.stdout + done.stderr


def test_importing_ferlab_imports_no_heavy_dependency():
    code = (
        "import sys, ferlab, ferlab.cli, ferlab.inference.models, ferlab.vision;"
        "heavy = [m for m in ('torch', 'cv2', 'onnxruntime', 'matplotlib.pyplot', 'fastapi')"
        " if m in sys.modules]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
